package gateway

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	directoryv1 "github.com/countymcc/mcc/proto/mcc/directory/v1"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
)

// serveOAuth adds the OAuth2 endpoints OAuth2 libraries expect, in front of
// the directory's IssueToken and RevokeToken: the token endpoint of the
// client-credentials grant (RFC 6749 §4.4) and the revocation endpoint (RFC
// 7009), form-encoded, with client credentials in the body or in HTTP Basic.
func serveOAuth(mux *http.ServeMux, conn *grpc.ClientConn, limit func(http.Handler) http.Handler) {
	dir := directoryv1.NewDirectoryServiceClient(conn)
	mux.Handle("POST /oauth2/token", limit(limitBody(oauthMaxBody, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
			return
		}
		req := &directoryv1.IssueTokenRequest{
			GrantType:    r.PostForm.Get("grant_type"),
			ClientId:     r.PostForm.Get("client_id"),
			ClientSecret: r.PostForm.Get("client_secret"),
			Scope:        r.PostForm.Get("scope"),
		}
		basic := false
		if id, secret, ok := r.BasicAuth(); ok {
			// RFC 6749 §2.3.1: both are form-encoded before Basic.
			if i, err := url.QueryUnescape(id); err == nil {
				id = i
			}
			if s, err := url.QueryUnescape(secret); err == nil {
				secret = s
			}
			req.ClientId, req.ClientSecret, basic = id, secret, true
		}
		if req.GetGrantType() != "client_credentials" {
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only client_credentials is supported")
			return
		}
		resp, err := dir.IssueToken(r.Context(), req)
		if err != nil {
			tokenError(w, err, basic)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": resp.GetAccessToken(),
			"token_type":   resp.GetTokenType(),
			"expires_in":   resp.GetExpiresIn(),
			"scope":        resp.GetScope(),
		})
	}))))
	mux.Handle("POST /oauth2/revoke", limit(limitBody(oauthMaxBody, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request", "the body must carry token=")
			return
		}
		// The caller authenticates with its own bearer token.
		ctx := metadata.AppendToOutgoingContext(r.Context(), "authorization", r.Header.Get("Authorization"))
		if _, err := dir.RevokeToken(ctx, &directoryv1.RevokeTokenRequest{Token: r.PostForm.Get("token")}); err != nil {
			if status.Code(err) == codes.Unauthenticated {
				oauthError(w, http.StatusUnauthorized, "invalid_client", "a valid bearer token is needed to revoke")
				return
			}
			oauthError(w, runtime.HTTPStatusFromCode(status.Code(err)), "invalid_request", status.Convert(err).Message())
			return
		}
		w.WriteHeader(http.StatusOK)
	}))))
}

// oauthMaxBody bounds an OAuth2 request: a few form fields and a token.
const oauthMaxBody = 16 << 10

// tokenError answers a failed grant the OAuth2 way: every credential
// failure is invalid_client, a locked client also gets 429 and Retry-After.
func tokenError(w http.ResponseWriter, err error, basic bool) {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unauthenticated:
		if basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="mcc"`)
		}
		oauthError(w, http.StatusUnauthorized, "invalid_client", "invalid client credentials")
	case codes.InvalidArgument:
		kind := "invalid_request"
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					if v.GetField() == "scope" {
						kind = "invalid_scope"
					}
				}
			}
		}
		oauthError(w, http.StatusBadRequest, kind, st.Message())
	case codes.FailedPrecondition:
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "CLIENT_LOCKED" {
				w.Header().Set("Retry-After", info.GetMetadata()["retry_after_seconds"])
				oauthError(w, http.StatusTooManyRequests, "invalid_client", st.Message())
				return
			}
		}
		oauthError(w, http.StatusBadRequest, "invalid_request", st.Message())
	default:
		oauthError(w, runtime.HTTPStatusFromCode(status.Code(err)), "server_error", "the token service is not available; retry later")
	}
}

// oauthError writes an RFC 6749 §5.2 error.
func oauthError(w http.ResponseWriter, code int, kind, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": kind, "error_description": strings.TrimSpace(description)})
}
