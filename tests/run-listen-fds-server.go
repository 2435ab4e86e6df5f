// SPDX-License-Identifier: MIT
//
// run-listen-fds-server.go - a Go HTTP server for the `baton run
// --listen-fds` tests, as Go servers are written for systemd: its listener
// comes from go-systemd's activation package (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES) and it says READY=1 with daemon.SdNotify. Go makes its
// socket system calls itself, so LD_PRELOAD could not help it.
//
// Every response body is "pid P generation G" (G from BATON_GENERATION).
// On SIGTERM it stops accepting and drains: each connection's next
// response says "Connection: close" (Go then closes it after the
// response); it exits 0 once no connection is left, or after 10 s.
//
// Built offline from Debian's packages (golang-go,
// golang-github-coreos-go-systemd-dev) in GOPATH mode, with CGO_ENABLED=0:
// a static binary.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/activation"
	"github.com/coreos/go-systemd/daemon"
)

func main() {
	byName, err := activation.ListenersWithNames()
	if err != nil || len(byName["web"]) != 1 {
		fmt.Fprintf(os.Stderr, "run-listen-fds-server-go: no listener named web (%v)\n", err)
		os.Exit(2)
	}
	ln := byName["web"][0]
	body := fmt.Sprintf("pid %d generation %s\n", os.Getpid(), os.Getenv("BATON_GENERATION"))

	var draining atomic.Bool
	var mu sync.Mutex
	open := 0
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close")
			}
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprint(w, body)
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch s {
			case http.StateNew:
				open++
			case http.StateClosed, http.StateHijacked:
				open--
			}
		},
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go srv.Serve(ln)

	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); !ok {
		fmt.Fprintf(os.Stderr, "run-listen-fds-server-go: READY=1 not sent (%v)\n", err)
		os.Exit(2)
	}
	<-term
	draining.Store(true)
	ln.Close() // our copy only: the supervisor and the new program hold the socket
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		mu.Lock()
		n := open
		mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	os.Exit(0)
}
