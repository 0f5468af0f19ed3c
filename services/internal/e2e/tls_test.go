package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	typev1 "github.com/countymcc/mcc/proto/mcc/type/v1"
)

// TestTLS runs mcc with certificates from `mcc certs`: REST only over HTTPS,
// gRPC only with a client certificate of the CA, and the services' calls to
// each other (a lab order checks its patient with the directory) over the
// same mutual TLS.
func TestTLS(t *testing.T) {
	certs := t.TempDir()
	if out, err := mcc(t, "certs", "-dir", certs); err != nil {
		t.Fatalf("certs: %v %s", err, out)
	}
	ca, cert, key := filepath.Join(certs, "ca.pem"), filepath.Join(certs, "mcc.pem"), filepath.Join(certs, "mcc.key")
	sys := start(t, "-tls.cert="+cert, "-tls.key="+key, "-tls.ca="+ca)
	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	https := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + strings.TrimPrefix(sys.url, "http://")

	resp, err := https.Get(url + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp, err := http.Get(sys.url + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP is answered")
		}
	}

	// A lab order: the lab calls the directory over mutual TLS.
	if out, err := mcc(t, "seed", "demo", "-addr", sys.grpc, "-data-dir", sys.dataDir, "-tls.ca", ca, "-tls.cert", cert, "-tls.key", key); err != nil {
		t.Fatalf("seed over mutual TLS: %v %s", err, out)
	}
	doc := sys.token(t, "demo", "dls", time.Hour, typev1.Role_ROLE_CLINICIAN)
	patients := httpsDo(t, https, "GET", url+"/v1/patients", doc, "")
	id := strings.SplitN(strings.SplitN(patients, `"name":"patients/`, 2)[1], `"`, 2)[0]
	order := httpsDo(t, https, "POST", url+"/v1/lab/orders?requestId=tls-1", doc, `{"patient":"patients/`+id+`","tests":["2823-3"],"priority":"PRIORITY_ROUTINE"}`)
	if !strings.Contains(order, `"name":"orders/`) {
		t.Fatalf("order over TLS: %s", order)
	}

	// gRPC without a client certificate is refused; with one it works.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	noCert, err := grpc.NewClient(sys.grpc, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if _, err := healthpb.NewHealthClient(noCert).Check(ctx, &healthpb.HealthCheckRequest{}); err == nil {
		t.Error("gRPC without a client certificate was served")
	}
	if out, err := mcc(t, "health", "-addr", sys.grpc, "-tls.ca", ca, "-tls.cert", cert, "-tls.key", key); err != nil {
		t.Errorf("health over mutual TLS: %v %s", err, out)
	}
}

func httpsDo(t *testing.T, c *http.Client, method, url, token, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return string(b)
}
