package kvs

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// startDebug serves pprof on addr, which must be a loopback address: the
// profiles reveal memory contents and cost CPU, so they are never served on
// the readiness port or on an address other hosts can reach.
func (n *Node) startDebug(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("kvs: debug listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("kvs: debug listen %q: pprof is served on a loopback address only (127.0.0.1:port)", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("kvs: debug listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	n.debugSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	n.debugLn = ln
	go n.debugSrv.Serve(ln)
	return nil
}

// DebugAddr is the pprof listen address ("" if disabled).
func (n *Node) DebugAddr() string {
	if n.debugLn == nil {
		return ""
	}
	return n.debugLn.Addr().String()
}
