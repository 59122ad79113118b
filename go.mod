module github.com/mxdrop/mxdrop

go 1.26.8

require (
	github.com/emersion/go-maildir v0.6.0
	github.com/rs/zerolog v1.35.1
	golang.org/x/net v0.62.0
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
