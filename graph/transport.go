package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/internal/apperr"
	"github.com/tally-billing/tally/internal/auth"
)

// The media types of a GraphQL response.
const (
	mediaJSON            = "application/json"
	mediaGraphQLResponse = "application/graphql-response+json"
)

// Body limits of a GraphQL request over HTTP: the query's own limit and
// room for variables (50 metadata entries of 540 bytes, 100 ids). A caller
// without a token may only read public fields, whose requests are small.
// Nothing larger is even decoded.
const (
	MaxBody          = 64 << 10
	MaxAnonymousBody = 8 << 10
)

// httpTransport serves GraphQL over HTTP as the GraphQL-over-HTTP
// specification says (the graphql-http audit passes every MUST and SHOULD):
// POST with a JSON body, GET for queries; the response is
// application/graphql-response+json when the client asks for it, JSON
// otherwise. A request that fails before execution (a body that is not
// JSON, a document that does not parse or validate, variables that do not
// fit their types, a limit) is a request error: 200 with errors for a JSON
// client, 400 without a data entry for a graphql-response+json client. A
// mutation over GET is 405 with Allow: POST.
type httpTransport struct{}

var _ graphql.Transport = httpTransport{}

func (httpTransport) Supports(r *http.Request) bool {
	return r.Header.Get("Upgrade") == "" && (r.Method == http.MethodPost || r.Method == http.MethodGet)
}

func (httpTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	media, ok := responseMedia(r.Header.Get("Accept"))
	if !ok {
		w.Header().Set("Content-Type", mediaJSON)
		writeRequestError(w, http.StatusNotAcceptable, apperr.InvalidArgument,
			"the response can be application/json or application/graphql-response+json")
		return
	}
	w.Header().Set("Content-Type", media+"; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")

	params, status, err := readParams(w, r)
	if err != nil {
		writeRequestError(w, status, apperr.InvalidArgument, err.Error())
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: graphql.Now(), End: graphql.Now()}

	ctx := r.Context()
	opCtx, errs := exec.CreateOperationContext(ctx, params)
	if errs != nil {
		resp := exec.DispatchError(graphql.WithOperationContext(ctx, opCtx), errs)
		status := http.StatusOK
		if media == mediaGraphQLResponse {
			status = http.StatusBadRequest
		}
		writeResponse(w, status, resp, false)
		return
	}
	if r.Method == http.MethodGet && opCtx.Operation.Operation != ast.Query {
		w.Header().Set("Allow", http.MethodPost)
		writeRequestError(w, http.StatusMethodNotAllowed, apperr.InvalidArgument,
			"only queries may be sent with GET; send "+string(opCtx.Operation.Operation)+"s with POST")
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, opCtx)
	writeResponse(w, http.StatusOK, responses(ctx), true)
}

// responseMedia picks the response's media type from the Accept header: the
// first acceptable type the client lists. No header, */* and application/*
// mean JSON, as the specification asks of servers that still serve JSON
// clients.
func responseMedia(accept string) (string, bool) {
	if strings.TrimSpace(accept) == "" {
		return mediaJSON, true
	}
	for part := range strings.SplitSeq(accept, ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || params["q"] == "0" {
			continue
		}
		switch mediaType {
		case mediaGraphQLResponse:
			return mediaGraphQLResponse, true
		case mediaJSON, "application/*", "*/*":
			return mediaJSON, true
		}
	}
	return "", false
}

// readParams decodes the operation from the query string (GET) or the JSON
// body (POST), within the body limit of the caller. Errors are the client's
// and safe to show; the body is never echoed.
func readParams(w http.ResponseWriter, r *http.Request) (*graphql.RawParams, int, error) {
	params := &graphql.RawParams{}
	if r.Method == http.MethodGet {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return nil, http.StatusBadRequest, errors.New("the query string is malformed")
		}
		params.Query, params.OperationName = q.Get("query"), q.Get("operationName")
		for name, into := range map[string]*map[string]any{"variables": &params.Variables, "extensions": &params.Extensions} {
			if v := q.Get(name); v != "" {
				if err := decodeJSON([]byte(v), into); err != nil {
					return nil, http.StatusBadRequest, errors.New(name + " must be a JSON object")
				}
			}
		}
	} else {
		limit := int64(MaxBody)
		if _, ok := auth.FromContext(r.Context()); !ok {
			limit = MaxAnonymousBody
		}
		if r.ContentLength > limit {
			return nil, http.StatusRequestEntityTooLarge, bodyTooLarge(limit)
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			return nil, http.StatusRequestEntityTooLarge, bodyTooLarge(limit)
		case err != nil:
			return nil, http.StatusBadRequest, errors.New("the request body could not be read")
		}
		if err := decodeJSON(body, params); err != nil {
			return nil, http.StatusBadRequest,
				errors.New("the body must be a JSON object with a string query and optional operationName, variables and extensions")
		}
	}
	if strings.TrimSpace(params.Query) == "" {
		return nil, http.StatusBadRequest, errors.New("the request has no query")
	}
	return params, 0, nil
}

func bodyTooLarge(limit int64) error {
	return errors.New("the request body is larger than " + humanBytes(limit))
}

func humanBytes(n int64) string {
	if n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n>>10, 10) + " KiB"
}

// decodeJSON decodes exactly one JSON value, keeping numbers exact (an
// amount past 2^53 must not be rounded on its way to validation).
func decodeJSON(data []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// writeResponse writes a GraphQL response. A request error has no data
// entry at all (gqlgen's Response would write "data": null).
func writeResponse(w http.ResponseWriter, status int, resp *graphql.Response, executed bool) {
	var body []byte
	var err error
	if executed {
		body, err = marshalExecuted(resp)
	} else {
		body, err = json.Marshal(struct {
			Errors     gqlerror.List  `json:"errors"`
			Extensions map[string]any `json:"extensions,omitempty"`
		}{resp.Errors, resp.Extensions})
	}
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"errors":[{"message":"internal error","extensions":{"code":"INTERNAL"}}]}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// marshalExecuted writes an executed operation's response with its data as
// the executor wrote it: json.Marshal would scan a RawMessage again to
// compact and validate it (a tenth of a 50-row page's CPU).
func marshalExecuted(resp *graphql.Response) ([]byte, error) {
	if resp.Label != "" || resp.Path != nil || resp.HasNext != nil {
		return json.Marshal(resp)
	}
	body := make([]byte, 0, len(resp.Data)+64)
	body = append(body, '{')
	if len(resp.Errors) > 0 {
		errs, err := json.Marshal(resp.Errors)
		if err != nil {
			return nil, err
		}
		body = append(append(append(body, `"errors":`...), errs...), ',')
	}
	body = append(body, `"data":`...)
	if len(resp.Data) == 0 {
		body = append(body, "null"...)
	} else {
		body = append(body, resp.Data...)
	}
	if len(resp.Extensions) > 0 {
		ext, err := json.Marshal(resp.Extensions)
		if err != nil {
			return nil, err
		}
		body = append(append(body, `,"extensions":`...), ext...)
	}
	return append(body, '}'), nil
}

// WriteRequestError answers a request refused before GraphQL saw it, in
// the shape GraphQL clients read errors in.
func WriteRequestError(w http.ResponseWriter, status int, code apperr.Code, message string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", mediaJSON)
	}
	writeRequestError(w, status, code, message)
}

func writeRequestError(w http.ResponseWriter, status int, code apperr.Code, message string) {
	writeResponse(w, status, &graphql.Response{Errors: gqlerror.List{{
		Message: message, Extensions: map[string]any{"code": string(code)},
	}}}, false)
}
