# The zcluster image of the offline path (deploy/offline/build-images.sh):
# FROM scratch, so nothing is pulled. The build context is a directory the
# script fills: the static binary (CGO_ENABLED=0) and etc/ (a passwd and
# group naming the non-root user). zcluster keeps zinx quiet by itself
# (internal/runtime/zinxquiet): no zinx.json is needed. No shell in the image: the
# compose healthcheck is exec form, ["CMD", "zcluster", "health", ...].
FROM scratch
LABEL org.zcluster.offline=zcluster
COPY etc/ /etc/
COPY zcluster /usr/local/bin/zcluster
ENV PATH=/usr/local/bin
USER 65532:65532
# 18001 gate clients, 19001 gate relay, 19101 backend relay, 9100 /metrics.
EXPOSE 18001 19001 19101 9100
ENTRYPOINT ["zcluster"]
CMD ["--help"]
