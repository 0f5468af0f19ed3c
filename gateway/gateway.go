// Package gateway is MCC's REST interface: grpc-gateway handlers for every
// service, dialled over real gRPC connections so that authentication,
// validation, tracing and errors behave exactly as for gRPC clients.
//
// It also serves the merged OpenAPI document at /openapi.json, a
// human-readable reference built from it at /docs, liveness at
// /healthz, readiness at /readyz (every backend answers its gRPC health
// check) and Prometheus metrics at /metrics.
package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "github.com/countymcc/mcc/proto/mcc/admin/v1"
	auditv1 "github.com/countymcc/mcc/proto/mcc/audit/v1"
	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	ecgv1 "github.com/countymcc/mcc/proto/mcc/ecg/v1"
	feedv1 "github.com/countymcc/mcc/proto/mcc/feed/v1"
	imagingv1 "github.com/countymcc/mcc/proto/mcc/imaging/v1"
	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
	pathologyv1 "github.com/countymcc/mcc/proto/mcc/pathology/v1"
	recognitionv1 "github.com/countymcc/mcc/proto/mcc/recognition/v1"
	referralv1 "github.com/countymcc/mcc/proto/mcc/referral/v1"
	sterilizationv1 "github.com/countymcc/mcc/proto/mcc/sterilization/v1"
	"github.com/countymcc/mcc/proto/openapi"
)

// Endpoints maps a service name, as in mcc's -target flag ("directory"), to
// the gRPC address that serves it.
type Endpoints map[string]string

// registerFunc registers one service's REST handlers on a connection.
type registerFunc func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error

// handlers lists the REST handlers of every service the gateway knows.
func handlers() map[string]registerFunc {
	return map[string]registerFunc{
		"admin":         adminv1.RegisterAdminServiceHandler,
		"audit":         auditv1.RegisterAuditServiceHandler,
		"directory":     directoryv1.RegisterDirectoryServiceHandler,
		"lab":           labv1.RegisterLabServiceHandler,
		"imaging":       imagingv1.RegisterImagingServiceHandler,
		"ecg":           ecgv1.RegisterEcgServiceHandler,
		"pathology":     pathologyv1.RegisterPathologyServiceHandler,
		"sterilization": sterilizationv1.RegisterSterilizationServiceHandler,
		"referral":      referralv1.RegisterReferralServiceHandler,
		"recognition":   recognitionv1.RegisterRecognitionServiceHandler,
		"feed":          feedv1.RegisterFeedServiceHandler,
	}
}

// Services returns the names of the services the gateway can expose.
func Services() []string {
	names := make([]string, 0, len(handlers()))
	for name := range handlers() {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// RequestIDHeader is the header that correlates a REST call with its logs.
// The gateway forwards it as gRPC metadata, makes one up when the client sent
// none, and echoes it in the response.
const RequestIDHeader = "X-Request-Id"

// PurposeHeader declares the purpose of use of a call (`TREATMENT`,
// `QUALITY-REVIEW`...). The gateway checks it and forwards it as the gRPC
// metadata `x-mcc-purpose`, which the audit trail records.
const PurposeHeader = "X-MCC-Purpose"

// purposePattern is the shape of a purpose: at most 64 letters, digits,
// spaces and _.:/-, starting with a letter or digit. Nothing else (no
// control characters, no line breaks) reaches the audit trail.
var purposePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 _.:/-]{0,63}$`)

type options struct {
	maxBodyBytes   int64
	dialOptions    []grpc.DialOption
	tracerProvider trace.TracerProvider
	propagator     propagation.TextMapPropagator
	metrics        http.Handler
	limiter        Limiter
	limitKey       KeyFunc
}

// Option configures New.
type Option func(*options)

// WithMaxBodyBytes limits the size of a request body; larger ones get 413.
// The default is 4 MiB.
func WithMaxBodyBytes(n int64) Option { return func(o *options) { o.maxBodyBytes = n } }

// WithDialOptions adds options to every backend connection, for example
// transport credentials.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithTracing traces every REST call and propagates the trace to the
// backends.
func WithTracing(tp trace.TracerProvider, p propagation.TextMapPropagator) Option {
	return func(o *options) { o.tracerProvider, o.propagator = tp, p }
}

// WithMetrics serves h at /metrics.
func WithMetrics(h http.Handler) Option { return func(o *options) { o.metrics = h } }

// New returns the gateway's HTTP handler for the services in endpoints. The
// connections it opens are closed when ctx ends.
func New(ctx context.Context, endpoints Endpoints, opts ...Option) (http.Handler, error) {
	o := options{
		maxBodyBytes:   4 << 20,
		tracerProvider: noop.NewTracerProvider(),
		propagator:     propagation.TraceContext{},
	}
	for _, opt := range opts {
		opt(&o)
	}
	mux := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(incomingHeader),
		runtime.WithOutgoingHeaderMatcher(func(string) (string, bool) { return "", false }),
		runtime.WithErrorHandler(retryAfter),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}}),
	)
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(o.tracerProvider),
			otelgrpc.WithPropagators(o.propagator),
		)),
	}, o.dialOptions...)

	known := handlers()
	conns := map[string]*grpc.ClientConn{}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for _, name := range slices.Sorted(maps.Keys(endpoints)) {
		register, ok := known[name]
		if !ok {
			closeAll()
			return nil, fmt.Errorf("gateway: unknown service %q (known: %s)", name, strings.Join(Services(), ", "))
		}
		conn, err := grpc.NewClient(endpoints[name], dial...)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("gateway: dial %s at %s: %w", name, endpoints[name], err)
		}
		conns[name] = conn
		if err := register(ctx, mux, conn); err != nil {
			closeAll()
			return nil, fmt.Errorf("gateway: register %s: %w", name, err)
		}
	}
	go func() {
		<-ctx.Done()
		closeAll()
	}()

	api := otelhttp.NewHandler(limitBody(o.maxBodyBytes, mux), "mcc.gateway",
		otelhttp.WithTracerProvider(o.tracerProvider),
		otelhttp.WithPropagators(o.propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }),
	)
	root := http.NewServeMux()
	root.Handle("/", rateLimit(o.limiter, o.limitKey, stripForwarded(checkPurpose(api))))
	root.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi.Document)
	})
	serveDocs(root)
	if conn, ok := conns["directory"]; ok {
		serveOAuth(root, conn, func(h http.Handler) http.Handler { return rateLimit(o.limiter, o.limitKey, h) })
	}
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	root.HandleFunc("GET /readyz", readiness(conns))
	if o.metrics != nil {
		root.Handle("GET /metrics", o.metrics)
	}
	return requestID(root), nil
}

// incomingHeader forwards the request ID to the backends. grpc-gateway
// always forwards Authorization itself; every other header a client sends
// stays at the gateway, so no header can smuggle metadata into a service.
func incomingHeader(h string) (string, bool) {
	switch {
	case strings.EqualFold(h, RequestIDHeader):
		return "x-request-id", true
	case strings.EqualFold(h, PurposeHeader):
		return "x-mcc-purpose", true
	}
	return "", false
}

// checkPurpose refuses a request whose X-MCC-Purpose header is repeated or
// malformed with 400, before it becomes metadata.
func checkPurpose(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v, ok := r.Header[http.CanonicalHeaderKey(PurposeHeader)]; ok && (len(v) != 1 || !purposePattern.MatchString(v[0])) {
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", PurposeHeader+": must be one value of at most 64 letters, digits, spaces and _.:/-")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// stripForwarded drops client-supplied X-Forwarded-* headers. grpc-gateway
// derives x-forwarded-for and x-forwarded-host metadata from them; without
// them it uses only the connection's own peer address and host.
func stripForwarded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for h := range r.Header {
			if strings.HasPrefix(h, "X-Forwarded-") || h == "Forwarded" {
				r.Header.Del(h)
			}
		}
		next.ServeHTTP(w, r)
	})
}

// requestID makes sure every call has a well-formed request ID, and echoes it.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = uuid.NewString()
			r.Header.Set(RequestIDHeader, id)
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r)
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:", c)) {
			return false
		}
	}
	return true
}

// limitBody refuses bodies larger than max with 413 before any of it reaches
// a handler. The body is read up front, which bounds memory per request to
// max.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > max {
			tooLarge(w, max)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		r.Body.Close()
		if err != nil {
			writeError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "could not read the request body")
			return
		}
		if int64(len(body)) > max {
			tooLarge(w, max)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, max int64) {
	writeError(w, http.StatusRequestEntityTooLarge, "RESOURCE_EXHAUSTED", fmt.Sprintf("request body larger than %d bytes", max))
}

// writeError writes an error in the same JSON shape as grpc-gateway's
// (google.rpc.Status), for errors the gateway raises itself.
func writeError(w http.ResponseWriter, httpStatus int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus)
	json.NewEncoder(w).Encode(map[string]any{"code": grpcCode(code), "message": message, "details": []any{}})
}

func grpcCode(name string) int {
	switch name {
	case "INVALID_ARGUMENT":
		return 3
	case "RESOURCE_EXHAUSTED":
		return 8
	default:
		return 2
	}
}

// readiness answers 200 when every backend reports SERVING on its gRPC
// health service, and 503 with the failing ones otherwise.
func readiness(conns map[string]*grpc.ClientConn) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		report := map[string]string{}
		ready := true
		for name, conn := range conns {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			switch {
			case err != nil:
				report[name], ready = "unreachable", false
			case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
				report[name], ready = strings.ToLower(resp.GetStatus().String()), false
			default:
				report[name] = "serving"
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(report)
	}
}

// retryAfter is grpc-gateway's error handler, which also turns a status's
// google.rpc.RetryInfo (a service that is busy, say too many long polls)
// into a Retry-After header, in whole seconds.
func retryAfter(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay().AsDuration() > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(ri.GetRetryDelay().AsDuration().Seconds()))))
			}
		}
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}
