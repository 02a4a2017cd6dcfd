package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/squib-vmm/squib/internal/jsonx"
	"github.com/squib-vmm/squib/internal/logger"
	"github.com/squib-vmm/squib/internal/metrics"
	"github.com/squib-vmm/squib/internal/vmm"
)

// request is one parsed API request.
type request struct {
	method string
	path   string
	// tokens are the path's segments; only the first selects a handler.
	tokens []string
	body   []byte
	// deprecated is set by handlers when the request used a deprecated
	// field; it adds the Deprecation header even to error answers.
	deprecated bool
}

func (r *request) token(i int) (string, bool) {
	if i < len(r.tokens) {
		return r.tokens[i], true
	}
	return "", false
}

// response is what a handler answers.
type response struct {
	status int
	body   []byte
	// fatal: the process exits once the answer is sent (a failed
	// snapshot load, as in Firecracker).
	fatal bool
}

func ok204() response           { return response{status: http.StatusNoContent} }
func ok200(b []byte) response   { return response{status: http.StatusOK, body: b} }
func fault(msg string) response { return faultStatus(http.StatusBadRequest, msg) }

func faultStatus(status int, msg string) response {
	b, _ := jsonx.Marshal(map[string]string{"fault_message": msg})
	return response{status: status, body: b}
}

// errResponse renders a controller or validation error.
func errResponse(err error) response {
	var e *vmm.Error
	if errors.As(err, &e) && e.TooLarge {
		return faultStatus(http.StatusRequestEntityTooLarge, e.Msg)
	}
	r := fault(err.Error())
	r.fatal = e != nil && e.Fatal
	return r
}

// httpError is the HTTP-level error body, byte for byte as Firecracker's
// micro_http writes it (the raw newline inside the string included).
func httpError(text string) []byte {
	return []byte(`{ "error": "` + text + "\nAll previous unanswered requests will be dropped.\" }")
}

// ServeHTTP parses, logs, routes and answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	start := time.Now()
	h := w.Header()
	h.Set("Server", "Firecracker API")

	if hr.ContentLength > s.maxPayload {
		s.writeRaw(w, http.StatusBadRequest, httpError(fmt.Sprintf("Request payload with size %d is larger than the limit of %d allowed by server.", hr.ContentLength, s.maxPayload)))
		return
	}
	body, err := io.ReadAll(io.LimitReader(hr.Body, s.maxPayload+1))
	if err != nil {
		s.writeRaw(w, http.StatusBadRequest, httpError("Invalid request."))
		return
	}
	if int64(len(body)) > s.maxPayload {
		s.writeRaw(w, http.StatusBadRequest, httpError(fmt.Sprintf("Request payload with size %d is larger than the limit of %d allowed by server.", len(body), s.maxPayload)))
		return
	}

	req := &request{method: hr.Method, path: hr.URL.Path, body: body}
	for _, t := range strings.Split(strings.TrimLeft(req.path, "/"), "/") {
		if t != "" || len(req.tokens) == 0 {
			req.tokens = append(req.tokens, t)
		}
	}
	if n := len(req.tokens); n > 1 && req.tokens[n-1] == "" {
		req.tokens = req.tokens[:n-1]
	}
	s.logReceived(req)

	resp := s.route(hr.Context(), req)

	first, _ := req.token(0)
	second, _ := req.token(1)
	if count, fails := requestCounters(metrics.Default, req.method, first, second); count != nil {
		count.Inc()
		if fails != nil && resp.status >= 300 {
			fails.Inc()
		}
	}
	if req.deprecated {
		// Firecracker flags deprecated use even on a failed request.
		h.Set("Deprecation", "true")
		metrics.Default.DeprecatedAPI.DeprecatedHTTPAPICalls.Inc()
	}
	switch {
	case resp.status == http.StatusNoContent:
		s.log.Infof("The request was executed successfully. Status code: 204 No Content.")
	case resp.status == http.StatusOK:
		s.log.Infof("The request was executed successfully. Status code: 200 OK.")
	default:
		s.log.Errorf("Received Error. Status code: %d %s. Message: %s", resp.status, http.StatusText(resp.status), faultText(resp.body))
	}
	s.writeRaw(w, resp.status, resp.body)
	s.log.Debugf("Total previous API call duration: %d us.", time.Since(start).Microseconds())
	if resp.fatal {
		// The client has its answer; now end the process, whose VMM state
		// the failed operation left unusable.
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		s.ctrl.Terminate(1)
	}
}

func faultText(b []byte) string {
	var f struct {
		FaultMessage string `json:"fault_message"`
	}
	if jsonx.Decode(b, &f) == nil {
		return f.FaultMessage
	}
	return string(b)
}

func (s *Server) writeRaw(w http.ResponseWriter, status int, body []byte) {
	if status != http.StatusNoContent {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	if len(body) > 0 {
		w.Write(body)
	}
}

// methodName is Firecracker's spelling of the method in log lines.
func methodName(m string) string {
	if m == "" {
		return m
	}
	return m[:1] + strings.ToLower(m[1:])
}

func (s *Server) logReceived(r *request) {
	if !s.log.Enabled(logger.Info) {
		return
	}
	msg := fmt.Sprintf("The API server received a %s request on %q", methodName(r.method), r.path)
	first, _ := r.token(0)
	switch {
	case len(r.body) == 0 || first == "mmds":
		// MMDS bodies may hold secrets: never logged, as in Firecracker.
		s.log.Infof("%s.", msg)
	case first == "cpu-config":
		s.log.Infof("%s.", msg)
		s.log.Debugf("%s with body %q.", msg, r.body)
	default:
		s.log.Infof("%s with body %q.", msg, r.body)
	}
}

// route applies Firecracker's dispatch order: body rules first, then the
// (method, first segment) table, then the fallback.
func (s *Server) route(ctx context.Context, r *request) response {
	first, _ := r.token(0)
	second, _ := r.token(1)
	hasBody := len(r.body) > 0
	switch {
	case r.method == http.MethodGet && hasBody:
		return fault("GET request cannot have a body.")
	case r.method == http.MethodPut && !hasBody:
		return fault("Empty PUT request.")
	case r.method == http.MethodPatch && !hasBody && !(first == "balloon" && second == "hinting"):
		return fault("Empty PATCH request.")
	case r.method == http.MethodDelete && hasBody:
		return fault("Empty Delete request.")
	}
	switch r.method {
	case http.MethodGet:
		if resp, ok := s.routeGet(ctx, r, first, second); ok {
			return resp
		}
	case http.MethodPut, http.MethodPatch, http.MethodDelete:
		if resp, ok := s.routeMutation(ctx, r, first, second); ok {
			return resp
		}
	}
	return fault(fmt.Sprintf("Invalid request method and/or path: %s %s.", r.method, first))
}

// dispatch checks the phase against the published view (a cheap early
// answer that never waits) and hands the request to the controller.
func (s *Server) dispatch(ctx context.Context, req vmm.Request) response {
	if err := req.Op.CheckPhase(s.ctrl.View().Started); err != nil {
		return errResponse(err)
	}
	res, err := s.ctrl.Do(ctx, req)
	if err != nil {
		return errResponse(err)
	}
	if res.JSON != nil {
		return ok200(res.JSON)
	}
	return ok204()
}

// decode strictly decodes the body into v, with Firecracker's wording.
func decode(body []byte, v any) (response, bool) {
	if err := jsonx.Decode(body, v); err != nil {
		return fault(deserializeMsg(err.Error())), false
	}
	return response{}, true
}

func deserializeMsg(detail string) string {
	return "An error occurred when deserializing the json body of a request: " + detail + "."
}

// checkID validates a resource ID from the path: Firecracker allows only
// alphanumerics and underscores.
func checkID(id string, present bool) (response, bool) {
	if !present || id == "" {
		return fault("The ID cannot be empty."), false
	}
	for _, c := range id {
		if c != '_' && !unicode.IsLetter(c) && !unicode.IsDigit(c) {
			return fault("API Resource IDs can only contain alphanumeric characters and underscores."), false
		}
	}
	return response{}, true
}
