// Command client is the Go client of the egress tests: `client REQUEST.json`, the request's mode,
// URL, method, headers and body read from the file so that no token is on a command line or in
// the environment. Modes: request, sse. Standard library only, so that it builds offline.
//
// It prints `STATUS PROTOCOL`, then the body (request) or a line `event INDEX DELAY_US` per
// server-sent event as it arrives (sse), DELAY_US being its arrival less the send time in its
// data. A non-2xx status is a reply, not an error; a failure to connect exits 1.
//
// net/http's defaults throughout: HTTP/2 when the server's ALPN offers it; the system roots, which
// SSL_CERT_FILE replaces; HTTPS_PROXY/https_proxy and NO_PROXY (a CONNECT tunnel), except for
// "localhost" and loopback addresses, which Go never sends to a proxy.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type request struct {
	Mode    string            `json:"mode"`
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "client.go:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	file, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var req request
	if err := json.Unmarshal(file, &req); err != nil {
		return err
	}
	outgoing, err := http.NewRequest(req.Method, req.URL, strings.NewReader(req.Body))
	if err != nil {
		return err
	}
	for name, value := range req.Headers {
		outgoing.Header.Set(name, value)
	}
	// net/http sends Host from here, never from the header map.
	if host := outgoing.Header.Get("Host"); host != "" {
		outgoing.Host = host
	}
	response, err := http.DefaultClient.Do(outgoing)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	protocol := response.Proto
	if response.ProtoMajor == 2 {
		protocol = "HTTP/2"
	}
	fmt.Printf("%d %s\n", response.StatusCode, protocol)
	switch req.Mode {
	case "request":
		_, err = io.Copy(os.Stdout, response.Body)
		return err
	case "sse":
		return events(response.Body)
	}
	return fmt.Errorf("no mode %q", req.Mode)
}

func events(body io.Reader) error {
	lines := bufio.NewScanner(body)
	for lines.Scan() {
		if !strings.HasPrefix(lines.Text(), "data: ") {
			continue
		}
		arrival := time.Now().UnixMicro()
		fields := strings.Fields(strings.TrimPrefix(lines.Text(), "data: "))
		if len(fields) != 2 {
			return fmt.Errorf("an event of %d fields", len(fields))
		}
		sent, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return err
		}
		fmt.Printf("event %s %d\n", fields[0], arrival-sent)
	}
	return lines.Err()
}
