# A Causeway node image that needs no base image: the statically linked `causeway` binary
# (built beforehand by docker/build.sh) alone in an empty filesystem.
#
#   docker/build.sh                     # static build + docker build -t causeway:dev
#   docker run -p 127.0.0.1:13800:13800 causeway:dev
#
# Configure with API.md's variables: ADDRESS (this node's ip:port as the other nodes reach
# it), VIEW (every node's ip:port, comma-separated), REPL_FACTOR; PORT defaults to 13800 and
# the node listens on all interfaces (LISTEN). Data lives in /data (mount a volume to keep it).
FROM scratch
COPY target/static/causeway /causeway
WORKDIR /data
ENV PORT=13800 \
    LISTEN=0.0.0.0:13800 \
    DATA_DIR=/data \
    RUST_LOG=info \
    NO_COLOR=1
EXPOSE 13800
STOPSIGNAL SIGTERM
ENTRYPOINT ["/causeway"]
CMD ["serve"]
