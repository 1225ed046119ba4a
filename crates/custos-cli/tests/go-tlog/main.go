// Checks a custos audit log with Go's reference implementation of signed
// notes and tiled transparency logs (golang.org/x/mod/sumdb/{note,tlog}, as
// vendored in GOROOT): opens the checkpoint with the pinned verifier key,
// reads every hash tile through tlog.TileHashReader (which authenticates
// each tile against the signed root), and proves every entry of every entry
// bundle into that root. Prints "ok SIZE" or fails.
//
// Usage: go run . BASE_URL VERIFIER_KEY
package main

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"custostlogcheck/note"
	"custostlogcheck/tlog"
)

func get(url string) []byte {
	resp, err := http.Get(url)
	if err != nil {
		fail("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		fail("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return body
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

// tiles reads custos hash tiles; Go names them tile/8/L/N, C2SP drops the height.
type tiles struct{ base string }

func (t tiles) Height() int { return 8 }

func (t tiles) ReadTiles(list []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, tile := range list {
		path := strings.TrimPrefix(tile.Path(), "tile/8/")
		out[i] = get(t.base + "/audit/tile/" + path)
	}
	return out, nil
}

func (t tiles) SaveTiles([]tlog.Tile, [][]byte) {}

func main() {
	base, vkey := os.Args[1], os.Args[2]
	verifier, err := note.NewVerifier(vkey)
	if err != nil {
		fail("verifier key: %v", err)
	}
	n, err := note.Open(get(base+"/audit/checkpoint"), note.VerifierList(verifier))
	if err != nil {
		fail("checkpoint note: %v", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != verifier.Name() {
		fail("checkpoint body: %q", n.Text)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("tree size: %v", err)
	}
	rootBytes, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootBytes) != tlog.HashSize {
		fail("root hash: %v", err)
	}
	var root tlog.Hash
	copy(root[:], rootBytes)
	tree := tlog.Tree{N: size, Hash: root}
	reader := tlog.TileHashReader(tree, tiles{base})
	th, err := tlog.TreeHash(size, reader)
	if err != nil || th != root {
		fail("tree hash from tiles: %v %v", th, err)
	}
	checked := int64(0)
	for start := int64(0); start < size; start += 256 {
		width := size - start
		tile := tlog.Tile{H: 8, L: -1, N: start / 256, W: 256}
		if width < 256 {
			tile.W = int(width)
		}
		path := strings.Replace(strings.TrimPrefix(tile.Path(), "tile/8/"), "data/", "entries/", 1)
		bundle := get(base + "/audit/tile/" + path)
		for i := 0; i < tile.W; i++ {
			if len(bundle) < 2 {
				fail("bundle %s ends early", path)
			}
			l := int(binary.BigEndian.Uint16(bundle))
			entry := bundle[2 : 2+l]
			bundle = bundle[2+l:]
			index := start + int64(i)
			if !strings.HasPrefix(string(entry), fmt.Sprintf("{\"index\":%d,", index)) {
				fail("entry %d does not carry its index: %q", index, entry)
			}
			proof, err := tlog.ProveRecord(size, index, reader)
			if err != nil {
				fail("prove %d: %v", index, err)
			}
			if err := tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(entry)); err != nil {
				fail("entry %d: %v", index, err)
			}
			checked++
		}
		if len(bundle) != 0 {
			fail("bundle %s has trailing bytes", path)
		}
	}
	fmt.Printf("ok %d\n", checked)
}
