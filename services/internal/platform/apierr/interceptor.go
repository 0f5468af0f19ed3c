package apierr

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor maps the error a handler returns through Status,
// and logs errors outside the table once, with the trace ID the logger adds
// from ctx.
func UnaryServerInterceptor(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return nil, toStatusError(ctx, logger, info.FullMethod, err)
		}
		return resp, nil
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func StreamServerInterceptor(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			return toStatusError(ss.Context(), logger, info.FullMethod, err)
		}
		return nil
	}
}

func toStatusError(ctx context.Context, logger *slog.Logger, method string, err error) error {
	st, known := Status(err)
	if !known {
		logger.ErrorContext(ctx, "internal error", "method", method, "error", err.Error())
	}
	return st.Err()
}
