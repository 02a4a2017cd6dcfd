package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/mmds"
	"github.com/squib-vmm/squib/internal/vmm"
)

// DefaultMaxPayload is Firecracker's default HTTP body limit
// (--http-api-max-payload-size), in bytes.
const DefaultMaxPayload = 51200

// MaxConnections is how many API connections are served at once, as in
// Firecracker; further connections get a 503 and are closed.
const MaxConnections = 10

// Server is the API server.
type Server struct {
	ctrl       *vmm.Controller
	store      *mmds.Store
	maxPayload int64
	log        logger.Handle
	srv        *http.Server
}

// Options configure a Server.
type Options struct {
	// MaxPayload is the body limit in bytes; 0 means DefaultMaxPayload.
	MaxPayload int64
	// Mmds is the MMDS data store read by GET /mmds.
	Mmds *mmds.Store
}

// New returns a server in front of ctrl.
func New(ctrl *vmm.Controller, opts Options) *Server {
	if opts.MaxPayload == 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	s := &Server{ctrl: ctrl, store: opts.Mmds, maxPayload: opts.MaxPayload, log: logger.For("fc_api", "api")}
	s.srv = &http.Server{
		Handler: s,
		// Firecracker's server keeps idle connections open; only bound the
		// header read so a silent client cannot pin a connection slot.
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          nil,
	}
	return s
}

// Serve answers requests on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(&limitListener{Listener: l, slots: make(chan struct{}, MaxConnections)})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// tooManyConnections is Firecracker's static answer to an 11th connection,
// byte for byte.
const tooManyConnections = "HTTP/1.1 503\r\nServer: Firecracker API\r\nConnection: close\r\nContent-Length: 40\r\n\r\n{ \"error\": \"Too many open connections\" }"

// limitListener caps concurrent connections.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
			go func() {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte(tooManyConnections))
				c.Close()
			}()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
