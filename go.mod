module github.com/sluicemail/sluice

go 1.26.8

require (
	github.com/emersion/go-message v0.18.2 // indirect
	github.com/expr-lang/expr v1.17.8 // indirect
	github.com/miekg/dns v1.1.73 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
