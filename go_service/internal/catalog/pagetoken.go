package catalog

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
)

// pageToken is what a ListProducts page token carries: where the next page
// starts and the query it belongs to. On the wire it is
// base64url(JSON || HMAC-SHA256(key, JSON)), so clients cannot read meaning
// into it or alter it unnoticed.
type pageToken struct {
	AfterID string `json:"a"`
	Tag     string `json:"t"`
}

// tokenContext separates these MACs from any other use of the key.
const tokenContext = "shop.catalog.v1.ListProducts page token v1\x00"

var errBadToken = errors.New("the page token is malformed or was not issued by this catalog")

func signToken(key []byte, t pageToken) string {
	payload, err := json.Marshal(t)
	if err != nil {
		panic("marshal page token: " + err.Error()) // two strings always marshal
	}
	return base64.RawURLEncoding.EncodeToString(append(payload, tokenMAC(key, payload)...))
}

func verifyToken(key []byte, token string) (pageToken, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) <= sha256.Size {
		return pageToken{}, errBadToken
	}
	payload, mac := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	if !hmac.Equal(mac, tokenMAC(key, payload)) {
		return pageToken{}, errBadToken
	}
	var t pageToken
	if err := json.Unmarshal(payload, &t); err != nil {
		return pageToken{}, errBadToken
	}
	return t, nil
}

func tokenMAC(key, payload []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(tokenContext))
	h.Write(payload)
	return h.Sum(nil)
}
