// goserver: the Go peer of the benchmark. One tiny HTTP server, three ways of
// replacing it, each done the way the Go documentation and tableflip's own
// examples do it:
//
//	-mode tableflip  cloudflare/tableflip: SIGHUP starts the new process, which
//	                 inherits the listener; the old one then calls
//	                 http.Server.Shutdown (closes idle keep-alive
//	                 connections, waits for requests in flight).
//	-mode reuseport  the listener has SO_REUSEPORT: a new copy binds beside the
//	                 old one; SIGTERM makes the old one Shutdown.
//	-mode plain      no reuse: the old one must be gone before a new one binds.
//
// Every response is "ok\n" with the serving pid in an X-Pid header, so the
// body length never changes (ab counts a changed length as a failure).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

// Go 1.19's syscall package has no SO_REUSEPORT constant; this is Linux's.
const soReusePort = 15

func main() {
	mode := flag.String("mode", "plain", "tableflip, reuseport or plain")
	addr := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	pidfile := flag.String("pidfile", "", "file to write the serving pid to")
	flag.Parse()

	pid := strconv.Itoa(os.Getpid())
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Pid", pid)
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("ok\n"))
		}),
		IdleTimeout: 60 * time.Second,
	}
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}

	switch *mode {
	case "tableflip":
		upg, err := tableflip.New(tableflip.Options{PIDFile: *pidfile, UpgradeTimeout: 10 * time.Second})
		if err != nil {
			log.Fatal(err)
		}
		defer upg.Stop()
		go func() {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGHUP)
			for range sig {
				if err := upg.Upgrade(); err != nil {
					log.Println("upgrade failed:", err)
				}
			}
		}()
		ln, err := upg.Listen("tcp", *addr)
		if err != nil {
			log.Fatal(err)
		}
		go srv.Serve(ln)
		if err := upg.Ready(); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("ready pid=%s\n", pid)
		<-upg.Exit()
		shutdown()
	case "reuseport", "plain":
		lc := net.ListenConfig{}
		if *mode == "reuseport" {
			lc.Control = func(network, address string, c syscall.RawConn) error {
				var serr error
				err := c.Control(func(fd uintptr) {
					serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
				})
				if err != nil {
					return err
				}
				return serr
			}
		}
		ln, err := lc.Listen(context.Background(), "tcp", *addr)
		if err != nil {
			log.Fatal(err)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		go srv.Serve(ln)
		if *pidfile != "" {
			os.WriteFile(*pidfile, []byte(pid+"\n"), 0o644)
		}
		fmt.Printf("ready pid=%s\n", pid)
		<-sig
		shutdown()
	default:
		log.Fatalf("unknown mode %q", *mode)
	}
}
