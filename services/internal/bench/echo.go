package bench

import (
	"context"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	labv1 "github.com/countymcc/mcc/proto/mcc/lab/v1"
)

// The baseline is the physical limit of this stack on this machine: a gRPC
// server with no interceptor that answers every call at once, and a
// grpc-gateway mux in front of it, on loopback, in the tool's process. It
// carries the lab order's own messages (the request a township sends, the
// answer the lab gives), so the payloads are the same size as the
// measured calls.
//
// The echo service is registered by hand under a name of its own
// (mcc.bench.v1.EchoService) instead of being generated from a .proto: it
// exists only inside `mcc bench`, so it stays out of the public contract,
// the OpenAPI document and the gateway. The REST side does what generated
// gateway code does for a `body: "order"` POST: decode the JSON body with
// the gateway's marshaler, call the gRPC method through a client
// connection, and forward the answer with runtime.ForwardResponseMessage.
type echo struct {
	grpcAddr, httpURL string
	conn              *grpc.ClientConn
	grpcSrv           *grpc.Server
	httpSrv           *http.Server
}

const echoMethod = "/mcc.bench.v1.EchoService/Echo"

// echoService is the handler type of the hand-written service descriptor.
type echoService interface{}

// startEcho starts the echo servers; every call is answered with answer.
func startEcho(answer *labv1.CreateOrderResponse) (*echo, error) {
	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &echo{grpcAddr: glis.Addr().String(), grpcSrv: grpc.NewServer()}
	reply, err := proto.Marshal(answer)
	if err != nil {
		return nil, err
	}
	e.grpcSrv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "mcc.bench.v1.EchoService",
		HandlerType: (*echoService)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Echo", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(labv1.CreateOrderRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			// Decoding the answer each time costs what building one does.
			out := new(labv1.CreateOrderResponse)
			return out, proto.Unmarshal(reply, out)
		}}},
	}, struct{}{})
	go e.grpcSrv.Serve(glis)

	e.conn, err = grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		e.close()
		return nil, err
	}
	// The same marshaler options as the gateway's.
	mux := runtime.NewServeMux(runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
	}}))
	err = mux.HandlePath("POST", "/v1/echo", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		ctx := r.Context()
		_, outbound := runtime.MarshalerForRequest(mux, r)
		inbound, _ := runtime.MarshalerForRequest(mux, r)
		annotated, err := runtime.AnnotateContext(ctx, mux, r, echoMethod, runtime.WithHTTPPathPattern("/v1/echo"))
		if err != nil {
			runtime.HTTPError(ctx, mux, outbound, w, r, err)
			return
		}
		req := &labv1.CreateOrderRequest{Order: new(labv1.Order)}
		if err := inbound.NewDecoder(r.Body).Decode(req.Order); err != nil {
			runtime.HTTPError(ctx, mux, outbound, w, r, err)
			return
		}
		resp := new(labv1.CreateOrderResponse)
		if err := e.conn.Invoke(annotated, echoMethod, req, resp); err != nil {
			runtime.HTTPError(annotated, mux, outbound, w, r, err)
			return
		}
		runtime.ForwardResponseMessage(annotated, mux, outbound, w, r, resp)
	})
	if err != nil {
		e.close()
		return nil, err
	}
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.close()
		return nil, err
	}
	e.httpURL = "http://" + hlis.Addr().String()
	e.httpSrv = &http.Server{Handler: mux}
	go e.httpSrv.Serve(hlis)
	return e, nil
}

func (e *echo) close() {
	if e.httpSrv != nil {
		e.httpSrv.Close()
	}
	if e.conn != nil {
		e.conn.Close()
	}
	e.grpcSrv.Stop()
}
