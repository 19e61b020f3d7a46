package playground

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
)

// files are the page's assets: GraphiQL and React (vendor/, refreshed by
// update-assets.sh) and the page's own script and style. Nothing is
// fetched from elsewhere, so the playground works offline.
//
//go:embed assets/app.js assets/app.css assets/index.html assets/vendor/*.js assets/vendor/*.css
var files embed.FS

// assetPrefix is where assets are served; each URL carries a hash of the
// content, so a browser may keep an asset for good and a new build is
// fetched anew.
const assetPrefix = "/playground/assets/"

// contentTypes are the only kinds of file served; another extension under
// assets/ is a build mistake and fails loadAssets.
var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
}

type asset struct {
	hash        string
	contentType string
	body        []byte
	gzip        *gzipped
}

// gzipped is an asset's gzip encoding, made on its first request and kept:
// GraphiQL is 3.5 MB and 0.7 MB compressed, and compressing
// once means repeated requests cost no more than serving bytes.
type gzipped struct {
	once sync.Once
	body []byte
}

func (a asset) gzipped() []byte {
	a.gzip.once.Do(func() {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(a.body) // writes to memory do not fail
		_ = zw.Close()
		a.gzip.body = buf.Bytes()
	})
	return a.gzip.body
}

// assets maps a file's name under assets/ ("vendor/graphiql.min.js") to it.
type assets map[string]asset

func loadAssets() (assets, error) {
	out := assets{}
	err := fs.WalkDir(files, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) == ".html" {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return fmt.Errorf("playground: no content type for %s", p)
		}
		body, err := files.ReadFile(p)
		if err != nil {
			return fmt.Errorf("playground: reading %s: %w", p, err)
		}
		sum := sha256.Sum256(body)
		out[strings.TrimPrefix(p, "assets/")] = asset{hash: hex.EncodeToString(sum[:8]), contentType: ct, body: body, gzip: &gzipped{}}
		return nil
	})
	return out, err
}

// url is where the page finds the named asset.
func (a assets) url(name string) (string, error) {
	f, ok := a[name]
	if !ok {
		return "", fmt.Errorf("playground: no asset %s", name)
	}
	return assetPrefix + f.hash + "/" + name, nil
}

// serve answers /playground/assets/{hash}/{name}: a hash that is not the
// content's (an old page asking for an old build) is 404, never another
// content under a URL the browser was told never changes.
func (a assets) serve(w http.ResponseWriter, r *http.Request) {
	f, ok := a[chi.URLParam(r, "*")]
	if !ok || f.hash != chi.URLParam(r, "hash") {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Vary", "Accept-Encoding")
	body, etag := f.body, `"`+f.hash+`"`
	if acceptsGzip(r.Header.Values("Accept-Encoding")) {
		body, etag = f.gzipped(), `"`+f.hash+`-gzip"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reads Accept-Encoding as browsers send it ("gzip, deflate,
// br"); a gzip with q=0 is a refusal.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
				continue
			}
			q := strings.ReplaceAll(params, " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
