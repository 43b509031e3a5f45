// Command loop is both ends of the benchmark's egress rows: a fast HTTPS server and a keep-alive
// request loop, on Go's net/http, so that what the rows measure is the proxy between them.
// Standard library only, so that it builds offline.
//
//	loop server DIR
//	    Makes a CA and a certificate for NAME and 127.0.0.1 signed by it (ECDSA P-256), writes the
//	    CA to DIR/ca.pem, serves HTTPS with h2 and http/1.1 on 127.0.0.1 (a free port), answering
//	    every request 200 "ok", and prints `PORT`. It serves until killed or until its stdin ends.
//
//	loop client h1|h2 URL REQUESTS CONCURRENCY
//	    Speaks the benchmark's `bench-load` protocol: prints `ready`, waits for a line on stdin,
//	    sends REQUESTS/10 GETs to warm up (connections opened, TLS done) and prints `warmed N`,
//	    waits for another line, then sends REQUESTS GETs over CONCURRENCY keep-alive loops, and
//	    prints
//	    `p50_ns P50 p99_ns P99 rps RPS cpu_ns_per_request CPU`: each request's latency (send to
//	    end of the body), requests per second of wall time, and the process's own CPU time (user +
//	    system) per request. h1 forces HTTP/1.1, h2 requires HTTP/2 (one connection, multiplexed);
//	    any other protocol, status or body ends it with an error. Each request carries an
//	    `Authorization` header holding a made-up value (no known secret: a proxy scanning it
//	    finds nothing).
//
// The client finds a proxy and trusts roots as net/http does by default: HTTPS_PROXY (a CONNECT
// tunnel) and the system roots, which SSL_CERT_FILE replaces. Go never sends "localhost" or a
// loopback address through a proxy, so the URL names NAME, which the client itself dials at
// 127.0.0.1 when it goes direct (the proxy resolves it from its `[egress.hosts]`).
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// NAME: the upstream's made-up host name.
const name = "bench-upstream.test"

var okBody = []byte("ok")

func main() {
	var err error
	switch {
	case len(os.Args) == 3 && os.Args[1] == "server":
		err = server(os.Args[2])
	case len(os.Args) == 6 && os.Args[1] == "client":
		err = client(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	default:
		err = errors.New("usage: loop server DIR | loop client h1|h2 URL REQUESTS CONCURRENCY")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loop.go:", err)
		os.Exit(1)
	}
}

func server(dir string) error {
	certificate, caPEM, err := certificates()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o644); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", "2")
		_, _ = w.Write(okBody)
	})
	srv := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{certificate}},
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	// The benchmark closes stdin (or kills the server) when it is done.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	// ServeTLS offers h2 and http/1.1 by ALPN.
	return srv.ServeTLS(listener, "", "")
}

// certificates makes a CA and a server certificate for NAME, localhost and 127.0.0.1 signed by it.
func certificates() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "credwatch bench upstream CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name, "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, caPEM, nil
}

func client(protocol, url, requestsArg, concurrencyArg string) error {
	requests, err := strconv.Atoi(requestsArg)
	if err != nil || requests < 1 {
		return fmt.Errorf("REQUESTS: %q", requestsArg)
	}
	concurrency, err := strconv.Atoi(concurrencyArg)
	if err != nil || concurrency < 1 {
		return fmt.Errorf("CONCURRENCY: %q", concurrencyArg)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		// NAME is made up: dialled at 127.0.0.1 when the client goes direct; through a proxy the
		// client dials the proxy only.
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			if host, port, err := net.SplitHostPort(address); err == nil && host == name {
				address = net.JoinHostPort("127.0.0.1", port)
			}
			return dialer.DialContext(ctx, network, address)
		},
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     time.Minute,
	}
	wantMajor := 2
	switch protocol {
	case "h1":
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		wantMajor = 1
	case "h2":
		transport.ForceAttemptHTTP2 = true
	default:
		return fmt.Errorf("protocol %q is neither h1 nor h2", protocol)
	}
	httpClient := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	get := func() error {
		request, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		request.Header.Set("Authorization", "Bearer bench-made-up-value-0123456789")
		response, err := httpClient.Do(request)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(response.Body)
		response.Body.Close()
		if err != nil {
			return err
		}
		if response.StatusCode != http.StatusOK || string(body) != "ok" || response.ProtoMajor != wantMajor {
			return fmt.Errorf("%s %q where %s 200 \"ok\" was expected", response.Proto, body, protocol)
		}
		return nil
	}

	stdin := bufio.NewReader(os.Stdin)
	fmt.Println("ready")
	if _, err := stdin.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for go: %w", err)
	}
	warm := requests / 10
	if warm < concurrency {
		warm = concurrency
	}
	if _, _, err := run(get, warm, concurrency); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	fmt.Printf("warmed %d\n", warm)
	if _, err := stdin.ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for go: %w", err)
	}

	cpuBefore := cpuNanos()
	latencies, wall, err := run(get, requests, concurrency)
	cpu := cpuNanos() - cpuBefore
	if err != nil {
		return err
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	fmt.Printf("p50_ns %d p99_ns %d rps %.1f cpu_ns_per_request %.1f\n",
		percentile(latencies, 50), percentile(latencies, 99),
		float64(requests)/wall.Seconds(), float64(cpu)/float64(requests))
	return nil
}

// run sends `requests` GETs over `concurrency` loops and returns each one's latency in ns.
func run(get func() error, requests, concurrency int) ([]int64, time.Duration, error) {
	latencies := make([]int64, requests)
	var next int64 = -1
	var mutex sync.Mutex
	var first error
	var group sync.WaitGroup
	started := time.Now()
	for loop := 0; loop < concurrency; loop++ {
		group.Add(1)
		go func() {
			defer group.Done()
			for {
				mutex.Lock()
				next++
				index := next
				failed := first != nil
				mutex.Unlock()
				if failed || index >= int64(requests) {
					return
				}
				sent := time.Now()
				if err := get(); err != nil {
					mutex.Lock()
					if first == nil {
						first = err
					}
					mutex.Unlock()
					return
				}
				latencies[index] = time.Since(sent).Nanoseconds()
			}
		}()
	}
	group.Wait()
	return latencies, time.Since(started), first
}

// percentile: the nearest-rank percentile of sorted samples.
func percentile(sorted []int64, p int) int64 {
	rank := (len(sorted)*p + 99) / 100
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// cpuNanos: the process's user + system CPU time so far.
func cpuNanos() int64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return usage.Utime.Nano() + usage.Stime.Nano()
}
