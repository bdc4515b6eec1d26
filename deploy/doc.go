// Package deploy holds no code: its tests run the Docker deployment of this
// directory for real. They build the images with no registry
// (offline/build-images.sh), bring up docker-compose.yml with the offline
// override, and drive the cluster with zinx clients through the gates'
// published ports (on 127.0.0.1 only): scaling, rolling stops and network
// partitions made with docker network disconnect, docker pause and
// iptables rules inside the containers' network namespaces.
//
// They run only with ZC_DOCKER=1 and need root, a Docker engine,
// docker-compose (v1 or v2), debootstrap and Go:
//
//	ZC_DOCKER=1 go test -count=1 -v -timeout 20m ./deploy/
package deploy
