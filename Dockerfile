# kvd in a container (docs/deployment.md). Multi-stage: the first stage
# builds the binaries with the -dev packages, the image keeps only the
# runtime libraries, iptables and iproute2 (the public test suite injects
# network faults inside the container with them).
#
#   podman build -t kvd .
#   podman run -d --name kvd1 -p 8080:8080 -v kvd1:/app/data kvd
#   podman run -d --name n1 --network kvnet -e ADDR=n1:8080 -e PEERS=n2:8080,n3:8080 kvd
#
# Environment (API.md §1): ADDR (this node's id, host:port), PEERS (the other
# members' ids), DATA_DIR (default /app/data), CLUSTER_TOKEN. Extra flags go
# after the image name: podman run kvd --log-level debug.

FROM debian:bookworm-slim AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       build-essential cmake pkg-config libuv1-dev libleveldb-dev liblz4-dev check \
       libhttp-parser-dev libjansson-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr/local \
    && cmake --build build -j"$(nproc)" --target kvd kvctl kvdump kvload kvbench \
    && cmake --install build --prefix /opt/kvd \
    && strip /opt/kvd/bin/*

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       libuv1 libleveldb1d liblz4-1 libjansson4 libhttp-parser2.9 iptables iproute2 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --from=build /opt/kvd/bin/ /usr/local/bin/
COPY --from=build /opt/kvd/share/man/man1/ /usr/local/share/man/man1/
COPY --from=build /opt/kvd/share/bash-completion/ /usr/share/bash-completion/
WORKDIR /app
ENV DATA_DIR=/app/data
RUN mkdir -p /app/data
VOLUME ["/app/data"]
EXPOSE 8080
# kvd answers SIGTERM with a graceful stop (in-flight requests finish,
# leadership is handed over, exit 0): give podman/docker stop -t 15.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kvd"]
# Without ADDR the id is ":8080", which listens on loopback only: listen on
# every interface so that -p 8080:8080 reaches it.
CMD ["--listen", "0.0.0.0"]
