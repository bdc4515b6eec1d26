# Redis of the offline path: Debian's redis-server and redis-cli on the
# local debootstrap base (deploy/offline/build-images.sh passes BASE).
# Protected mode is off as in the public redis image: the server is only
# reachable on the compose network, whose other members are the nodes.
ARG BASE
FROM ${BASE}
# The base already holds /data owned by redis: no RUN step.
LABEL org.zcluster.offline=redis
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]
