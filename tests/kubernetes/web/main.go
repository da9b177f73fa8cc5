// web: the test deployment's image for tests/kubernetes (static, FROM scratch).
//
//	web                      serve "web on <NODE_NAME>" on :8080
//	web get URL N            GET URL N times, print each answer; exit 1 when none came
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) == 4 && os.Args[1] == "get" {
		n, err := strconv.Atoi(os.Args[3])
		if err != nil || n < 1 || n > 1000 {
			fmt.Fprintln(os.Stderr, "usage: web get URL N (1..1000)")
			os.Exit(2)
		}
		// a new connection per request, so that the Service picks an endpoint each time
		client := &http.Client{Timeout: 3 * time.Second,
			Transport: &http.Transport{DisableKeepAlives: true}}
		ok := 0
		for i := 0; i < n; i++ {
			resp, err := client.Get(os.Args[2])
			if err != nil {
				fmt.Println("error:", err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			fmt.Print(string(body))
			ok++
		}
		if ok == 0 {
			os.Exit(1)
		}
		return
	}
	node := os.Getenv("NODE_NAME")
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "web on %s\n", node)
	})
	if err := http.ListenAndServe(":8080", nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
