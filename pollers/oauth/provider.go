package oauth

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/endpoints"

	"github.com/mxdrop/mxdrop/configs"
)

// Providers of configs.OAuth.Provider.
const (
	ProviderGoogle    = "google"
	ProviderMicrosoft = "microsoft"
	ProviderCustom    = "custom"
)

// Default scopes for mail, used when oauth.scopes is empty.
var (
	// GoogleScopes is Gmail's one scope for IMAP, POP3 and SMTP.
	GoogleScopes = []string{"https://mail.google.com/"}
	// MicrosoftScopes let one consent serve IMAP, POP3 and SMTP of Microsoft 365;
	// offline_access makes the token endpoint return a refresh token.
	MicrosoftScopes = []string{
		"https://outlook.office.com/IMAP.AccessAsUser.All",
		"https://outlook.office.com/POP.AccessAsUser.All",
		"https://outlook.office.com/SMTP.Send",
		"offline_access",
	}
)

// Endpoint returns the authorization, token and device authorization endpoints of o:
// Google's, Microsoft's for o.Tenant ("common" when empty), or o.AuthURL and
// o.TokenURL for provider custom, which has no device endpoint (see
// LoginOptions.DeviceAuthURL). Google and Microsoft get client credentials in the
// request body, so a public client without a secret works. It fails for an unknown
// provider and for custom without token_url.
func Endpoint(o configs.OAuth) (oauth2.Endpoint, error) {
	switch o.Provider {
	case ProviderGoogle:
		e := endpoints.Google
		e.AuthStyle = oauth2.AuthStyleInParams
		return e, nil
	case ProviderMicrosoft:
		tenant := o.Tenant
		if tenant == "" {
			tenant = "common"
		}
		if strings.ContainsAny(tenant, "/?#") || tenant != url.PathEscape(tenant) {
			return oauth2.Endpoint{}, fmt.Errorf("tenant %q is not a directory id or domain", tenant)
		}
		e := endpoints.AzureAD(tenant)
		e.AuthStyle = oauth2.AuthStyleInParams
		return e, nil
	case ProviderCustom:
		if o.TokenURL == "" {
			return oauth2.Endpoint{}, errors.New("provider custom needs token_url")
		}
		return oauth2.Endpoint{AuthURL: o.AuthURL, TokenURL: o.TokenURL}, nil
	case "":
		return oauth2.Endpoint{}, errors.New("no oauth provider (google, microsoft or custom)")
	default:
		return oauth2.Endpoint{}, fmt.Errorf("oauth provider %q is not google, microsoft or custom", o.Provider)
	}
}

// Scopes returns o.Scopes, or the provider's default for mail when there are none
// (custom has no default: an empty list requests the provider's own default).
func Scopes(o configs.OAuth) []string {
	if len(o.Scopes) > 0 {
		return append([]string(nil), o.Scopes...)
	}
	switch o.Provider {
	case ProviderGoogle:
		return append([]string(nil), GoogleScopes...)
	case ProviderMicrosoft:
		return append([]string(nil), MicrosoftScopes...)
	}
	return nil
}

// ClientConfig returns the x/oauth2 client of o with redirectURL ("" where no
// redirect is used: refresh, device flow). The client secret is o.ClientSecret, or
// read from o.ClientSecretFile when the loader left it unread (an inactive poller);
// a client without a secret is a public client. Errors name no secret.
func ClientConfig(o configs.OAuth, redirectURL string) (*oauth2.Config, error) {
	ep, err := Endpoint(o)
	if err != nil {
		return nil, err
	}
	if o.ClientID == "" {
		return nil, errors.New("no oauth client_id")
	}
	secret := o.ClientSecret.Reveal()
	if secret == "" && o.ClientSecretFile != "" {
		b, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("read client_secret_file: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
	}
	return &oauth2.Config{
		ClientID:     o.ClientID,
		ClientSecret: secret,
		Endpoint:     ep,
		RedirectURL:  redirectURL,
		Scopes:       Scopes(o),
	}, nil
}

// authCodeOptions are the provider-specific parameters of the authorization request
// besides PKCE: a hint of the account to sign in as, and for Google the offline access
// and forced consent without which a second login returns no refresh token.
func authCodeOptions(o configs.OAuth, username string) []oauth2.AuthCodeOption {
	var opts []oauth2.AuthCodeOption
	if username != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", username))
	}
	if o.Provider == ProviderGoogle {
		opts = append(opts, oauth2.AccessTypeOffline, oauth2.ApprovalForce)
	}
	return opts
}
