package oauth

import (
	"strings"

	"github.com/emersion/go-sasl"
)

// Mechanism names.
const (
	XOAuth2     = "XOAUTH2"
	OAuthBearer = sasl.OAuthBearer // "OAUTHBEARER", RFC 7628
)

// ChooseMechanism picks the mechanism for a server that offers the SASL mechanisms
// offered (IMAP AUTH= capabilities, POP3 CAPA SASL, SMTP EHLO AUTH): OAUTHBEARER,
// the standard one, when offered, else XOAUTH2, which Google and Microsoft offer. An
// unknown list (nil) gives XOAUTH2.
func ChooseMechanism(offered []string) string {
	for _, m := range offered {
		if strings.EqualFold(m, OAuthBearer) {
			return OAuthBearer
		}
	}
	return XOAuth2
}

// NewXOAuth2Client returns a client of Google's and Microsoft's XOAUTH2 mechanism for
// user with an access token. The initial response is
// "user=<user>\x01auth=Bearer <token>\x01\x01". A server that refuses the token sends
// a JSON challenge, which the client answers with the empty response the mechanism
// asks for (the server then fails the exchange), after calling refused when not nil.
// Next never returns an error, so the protocol client always waits for the server's
// final answer.
func NewXOAuth2Client(user, token string, refused func()) sasl.Client {
	return &xoauth2Client{user: user, token: token, refused: refused}
}

type xoauth2Client struct {
	user, token string
	refused     func()
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return XOAuth2, []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next answers the error challenge; XOAUTH2 has no other.
func (c *xoauth2Client) Next([]byte) ([]byte, error) {
	if c.refused != nil {
		c.refused()
	}
	return []byte{}, nil
}

// NewOAuthBearerClient returns a client of OAUTHBEARER (RFC 7628) for user with an
// access token; host and port (0: none) name the server as section 3.1 allows. The
// initial response is go-sasl's. A server that refuses the token sends an error
// challenge (section 3.2.2); the client calls refused when not nil and answers with
// the single 0x01 of section 3.2.3, so the server fails the exchange itself. (go-sasl's
// own client returns an error from Next instead, which leaves an IMAP command
// unfinished.)
func NewOAuthBearerClient(user, token, host string, port int, refused func()) sasl.Client {
	return &oauthBearerClient{
		Client:  sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: user, Token: token, Host: host, Port: port}),
		refused: refused,
	}
}

type oauthBearerClient struct {
	sasl.Client // Start
	refused     func()
}

func (c *oauthBearerClient) Next([]byte) ([]byte, error) {
	if c.refused != nil {
		c.refused()
	}
	return []byte{0x01}, nil
}
