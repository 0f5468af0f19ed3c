package gateway

import (
	"embed"
	"io/fs"
	"net/http"
)

// docsFiles are the page, script and style of the API reference. They are
// our own and load nothing from elsewhere.
//
//go:embed docs/index.html docs/docs.js docs/docs.css
var docsFiles embed.FS

// docsPolicy lets the reference load only its own files and /openapi.json.
const docsPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// serveDocs adds the human-readable API reference: /docs is the page,
// which builds itself in the browser from /openapi.json, and /docs/* its
// script and style.
func serveDocs(mux *http.ServeMux) {
	assets, err := fs.Sub(docsFiles, "docs")
	if err != nil {
		// The embedded folder always exists.
		panic(err)
	}
	page, err := fs.ReadFile(assets, "index.html")
	if err != nil {
		panic(err)
	}
	secure := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", docsPolicy)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Referrer-Policy", "no-referrer")
			h.ServeHTTP(w, r)
		})
	}
	mux.Handle("GET /docs", secure(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})))
	// The page's links are relative to /docs, so /docs/ goes there.
	mux.Handle("GET /docs/{$}", http.RedirectHandler("/docs", http.StatusMovedPermanently))
	mux.Handle("GET /docs/", secure(http.StripPrefix("/docs/", http.FileServerFS(assets))))
}
