package server

import (
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tally-billing/tally/graph"
	"github.com/tally-billing/tally/internal/apperr"
)

// requestLog writes one structured line per request, with the request id
// that requestID assigned (and sent to the caller, so a client can quote it
// in a support request) and the client's own id when it sent a usable one.
func requestLog(logger *slog.Logger, m *metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			reqID := middleware.GetReqID(r.Context())
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			elapsed := time.Since(start)
			route := chi.RouteContext(r.Context()).RoutePattern()
			if route == "" {
				route = "unmatched"
			}
			nameSpan(r, route)
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			m.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(route).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			switch {
			case status == http.StatusServiceUnavailable:
				// Answered on purpose for a condition that passes (the
				// database unreachable, a commit's outcome unknown, not
				// ready): the client retries; nothing is broken here.
				level = slog.LevelWarn
			case status >= 500:
				level = slog.LevelError
			}
			// Checked first: building the line costs more than the rest of
			// a cheap request when the level is off.
			if !logger.Enabled(r.Context(), level) {
				return
			}
			attrs := []slog.Attr{slog.String("request_id", reqID)}
			if client := clientRequestIDOf(r.Context()); client != "" {
				attrs = append(attrs, slog.String("client_request_id", client))
			}
			logger.LogAttrs(r.Context(), level, "request", append(attrs,
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Int("bytes", ww.BytesWritten()),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
				slog.String("remote", r.RemoteAddr),
			)...)
		})
	}
}

// recoverer turns a panic below it into a 500 without a stack trace on the
// wire; the trace goes to the log.
func recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					logger.ErrorContext(r.Context(), "panic in HTTP handler",
						"panic", v, "request_id", middleware.GetReqID(r.Context()))
					writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// maxBody caps request bodies; reading past the cap fails and the handler
// answers 413.
func maxBody(limit int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > limit {
				writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "request body too large"})
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			next.ServeHTTP(w, r)
		})
	}
}

// requireJSON refuses POST bodies that are not JSON. Browsers send
// form-encoded, multipart and text/plain bodies cross-site without a CORS
// preflight, so accepting them would open the API to CSRF.
func requireJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || (mediaType != "application/json" && mediaType != "application/graphql-response+json") {
				graph.WriteRequestError(w, http.StatusUnsupportedMediaType, apperr.InvalidArgument, "send the operation as application/json")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
