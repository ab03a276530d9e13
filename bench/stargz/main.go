// A minimal stargz snapshotter for the cold-start benchmark (bench/containerd.mjs): the library's
// lazily mounting filesystem (stargz-snapshotter/fs) under its remote-aware overlay snapshotter
// (stargz-snapshotter/snapshot), served to containerd as a proxy snapshotter over gRPC on a unix
// socket. Written against Debian's packaged sources (golang-github-containerd-stargz-snapshotter-dev)
// because the upstream daemon's `service` package needs the CRI API, which Debian does not package.
//
//	containerd-stargz-bench --root DIR --address SOCKET
//
// Build (bench/containerd.mjs buildStargzSnapshotter does this): in GOPATH mode, GO111MODULE=off, with a
// GOPATH whose src holds /usr/share/gocode/src's trees and this file as a package; `go build`.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	stargzfs "github.com/containerd/stargz-snapshotter/fs"
	"github.com/containerd/stargz-snapshotter/fs/config"
	"github.com/containerd/stargz-snapshotter/fs/layer"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/containerd/stargz-snapshotter/snapshot"
	"google.golang.org/grpc"
)

func main() {
	root := flag.String("root", "", "state directory (layer caches, FUSE mount points, snapshots)")
	address := flag.String("address", "", "unix socket to serve the snapshots API on")
	flag.Parse()
	if *root == "" || *address == "" {
		log.Fatal("usage: --root DIR --address SOCKET")
	}
	ctx := context.Background()

	// The library's defaults (on-demand fetches, background fetch of whole layers while idle,
	// prefetch only up to a landmark, which the plain conversion does not write), except no
	// Prometheus: nothing scrapes it.
	cfg := config.Config{NoPrometheus: true}
	// Registry hosts: the library's fallback passes containerd's default hosts, whose http.Client
	// has a nil Transport, and the fetcher calls Transport.RoundTrip directly (a nil-pointer panic),
	// so give the hosts a client with a real transport. Plain HTTP for loopback hosts, which is
	// what the bench's 127.0.0.1 registries need. The layers to mount are found from the labels
	// `ctr-remote image rpull` puts on the snapshots (FromDefaultLabels).
	client := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	hosts := func(ref reference.Spec) ([]docker.RegistryHost, error) {
		return docker.ConfigureDefaultRegistries(docker.WithClient(client), docker.WithPlainHTTP(docker.MatchLocalhost))(ref.Hostname())
	}
	// We run as root, so overlayfs reads the trusted.* opaque xattr; expose only that one.
	fs, err := stargzfs.NewFilesystem(filepath.Join(*root, "stargz"), cfg,
		stargzfs.WithGetSources(source.FromDefaultLabels(hosts)),
		stargzfs.WithOverlayOpaqueType(layer.OverlayOpaqueTrusted))
	if err != nil {
		log.Fatalf("stargz filesystem: %v", err)
	}
	// AsynchronousRemove: removing a snapshot returns at once and directories go at Cleanup,
	// as stargz-snapshotter's own service package sets it up, so containerd's garbage collection
	// does not block on unmounts.
	sn, err := snapshot.NewSnapshotter(ctx, filepath.Join(*root, "snapshotter"), fs, snapshot.AsynchronousRemove)
	if err != nil {
		log.Fatalf("snapshotter: %v", err)
	}

	// A stale socket from a killed run would make Listen fail.
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		log.Fatal(err)
	}
	_ = os.Remove(*address)
	l, err := net.Listen("unix", *address)
	if err != nil {
		log.Fatalf("listen %s: %v", *address, err)
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(sn))

	// On SIGTERM/SIGINT stop serving, then Close the snapshotter, which unmounts the FUSE
	// layers it mounted (otherwise they stay behind as dead mounts under --root).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		server.Stop()
	}()
	log.Printf("serving the stargz snapshotter on %s", *address)
	if err := server.Serve(l); err != nil {
		log.Printf("serve: %v", err)
	}
	if err := sn.Close(); err != nil {
		log.Printf("close: %v", err)
	}
	_ = os.Remove(*address)
}
