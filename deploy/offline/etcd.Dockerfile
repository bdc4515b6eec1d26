# etcd of the offline path: Debian's etcd-server and etcdctl on the local
# debootstrap base (deploy/offline/build-images.sh passes BASE). It takes
# the command line of deploy/docker-compose.yml's etcd service unchanged
# (/usr/local/bin/etcd, data in /etcd-data, `etcdctl endpoint health`).
ARG BASE
FROM ${BASE}
# The base already holds /usr/local/bin/etcd -> /usr/bin/etcd and
# /etcd-data owned by etcd (mode 700): no RUN step, so no container starts.
LABEL org.zcluster.offline=etcd
ENV ETCDCTL_API=3
USER etcd
EXPOSE 2379 2380
CMD ["/usr/local/bin/etcd", "--data-dir=/etcd-data"]
