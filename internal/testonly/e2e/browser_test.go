package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/zcluster/zcluster/examples/chat"
	"github.com/zcluster/zcluster/gate"
	"github.com/zcluster/zcluster/internal/testonly/testkit/chatkit"
	"github.com/zcluster/zcluster/web"
)

// The chat page (web/chat.html with web/zcluster.js) in a real headless
// Chromium: two pages on two gates chat over WebSocket, a page and a stock
// zinx TCP client chat, and a login of the same user in a third page kicks
// the first, which shows the reason.

// chromiumPath finds Debian's chromium. Without it the test skips, unless
// CI is set: then a missing browser is a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found on PATH and CI is set: install it (apt-get install -y chromium; .ci/run does)")
	}
	t.Skip("chromium not found on PATH: skipping the browser test (apt-get install -y chromium; with CI set this fails instead)")
	return ""
}

// newBrowser starts headless Chromium with a fresh profile; the returned
// context is its first tab.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// Start the browser now, so a start failure is reported as such. The
	// first call must not have a deadline: the browser lives as long as
	// its context (chromedp bounds the start itself).
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// page is one browser tab showing the chat page.
type page struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func openPage(t *testing.T, browser context.Context, name, pageURL string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	p := &page{t: t, name: name, ctx: ctx}
	// Open the tab with its own context (a deadline would close it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("page %s: new tab: %v", name, err)
	}
	p.run(30*time.Second, chromedp.Navigate(pageURL), chromedp.WaitVisible(chromedp.ID("login")))
	return p
}

func (p *page) run(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("page %s: %v", p.name, err)
	}
}

// waitText waits until the element's text contains substr.
func (p *page) waitText(sel, substr string) {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var text string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		got, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			text = got
		}
		if err == nil && strings.Contains(text, substr) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("page %s: %s never showed %q; it shows:\n%s", p.name, sel, substr, text)
}

func (p *page) login(user, wantGate string) {
	p.t.Helper()
	p.run(10*time.Second, chromedp.SetValue(chromedp.ID("user"), user), chromedp.Click(chromedp.ID("login")))
	p.waitText("#me", fmt.Sprintf("you are %s on %s", user, wantGate))
}

func (p *page) sendTo(to, text string) {
	p.t.Helper()
	p.run(10*time.Second,
		chromedp.SetValue(chromedp.ID("to"), to),
		chromedp.SetValue(chromedp.ID("text"), text),
		chromedp.Click(chromedp.ID("send")))
	p.waitText("#log", "to "+to+": "+text)
}

func TestBrowserChat(t *testing.T) {
	browser := newBrowser(t)
	c := newCluster(t)
	g1 := c.startGateWith("gate-1", func(cfg *gate.Config) { cfg.WSListen = "127.0.0.1:0" })
	g2 := c.startGateWith("gate-2", func(cfg *gate.Config) { cfg.WSListen = "127.0.0.1:0" })
	c.startBackend("im-1", chat.GroupIM)
	c.startBackend("echo-1", chat.GroupEcho)
	c.waitGroupSize(chat.GroupIM, 1, 10*time.Second)
	c.waitGroupSize(chat.GroupEcho, 1, 10*time.Second)

	var eps []web.Endpoint
	for _, g := range []*gate.Gate{g1, g2} {
		e, ok := web.EndpointOf(g.ID(), g.WSURL())
		if !ok {
			t.Fatalf("%s: websocket URL %q", g.ID(), g.WSURL())
		}
		eps = append(eps, e)
	}
	srv := httptest.NewServer(web.Handler("/chat/", func() []web.Endpoint { return eps }))
	t.Cleanup(srv.Close)
	base := srv.URL + "/chat/"

	// alice: gate-1, chosen with ?ws=; bob: gate-2, chosen in the list
	// the page loads from endpoints.json.
	alice := openPage(t, browser, "alice", base+"?ws="+url.QueryEscape(g1.WSURL()))
	alice.login("alice", "gate-1")
	bob := openPage(t, browser, "bob", base)
	bob.waitText("#gate", "gate-2")
	bob.run(10*time.Second, chromedp.SetValue(chromedp.ID("gate"), g2.WSURL()))
	bob.login("bob", "gate-2")

	// Two pages on two gates.
	alice.sendTo("bob", "hello bob from gate-1")
	bob.waitText("#log", "[alice] hello bob from gate-1")
	bob.sendTo("alice", "hi alice from gate-2")
	alice.waitText("#log", "[bob] hi alice from gate-2")

	// A page and a stock zinx TCP client.
	zed := newZinxClient(t, g2.ListenAddr())
	zed.send(t, chat.MsgLogin, []byte("zed"))
	zed.want(t, chat.MsgLogin, `"ok":true`)
	alice.sendTo("zed", "hello zinx client")
	zed.want(t, chat.MsgDelivered, "hello zinx client")
	zed.send(t, chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "alice", Text: "hello browser"}))
	alice.waitText("#log", "[zed] hello browser")

	// Broadcast and chain-echo from a page; an error reply as a rejected
	// request (sending to nobody is refused by the app, not the gate).
	bob.run(10*time.Second, chromedp.SetValue(chromedp.ID("bctext"), "everyone!"), chromedp.Click(chromedp.ID("broadcast")))
	alice.waitText("#log", "[all] bob: everyone!")
	alice.run(10*time.Second, chromedp.SetValue(chromedp.ID("echotext"), "round trip"), chromedp.Click(chromedp.ID("echo")))
	alice.waitText("#log", "echo: round trip")
	alice.run(10*time.Second,
		chromedp.SetValue(chromedp.ID("to"), "nobody"),
		chromedp.SetValue(chromedp.ID("text"), "anyone?"),
		chromedp.Click(chromedp.ID("send")))
	alice.waitText("#log", "not sent: nobody is offline")

	// The library itself: error frames reject requests with a ZError
	// naming the msgID; after a dropped connection it reconnects and logs
	// in again.
	lib := openPage(t, browser, "library", base)
	script := `(async () => {
		const { Client, ZError } = await import("./zcluster.js");
		const zc = new Client(` + "`" + g1.WSURL() + "`" + `, { minBackoff: 50 });
		await zc.connect();
		const out = {};
		try { await zc.request(2, { to: "x", text: "y" }); out.anon = "resolved"; }
		catch (e) { out.anon = (e instanceof ZError) + " " + e.msgID + " " + e.message; }
		try { await zc.request(777, "x"); out.unknown = "resolved"; }
		catch (e) { out.unknown = e.msgID + " " + e.message; }
		const me = await zc.login("libtest");
		out.login = me.user + "@" + me.gate;
		const relogin = new Promise((resolve) => zc.on("relogin", resolve));
		zc.ws.close(4000, "simulated drop");
		out.relogin = (await relogin).user;
		out.echo = (await zc.request(4, "after relogin")).text();
		zc.close();
		return JSON.stringify(out);
	})()`
	ectx, ecancel := context.WithTimeout(lib.ctx, 20*time.Second)
	got, err := chromedp.Run(ectx, chromedp.Evaluate[string](script, chromedp.EvalAwaitPromise))
	ecancel()
	if err != nil {
		t.Fatalf("library script: %v", err)
	}
	want := `{"anon":"true 2 not logged in","unknown":"777 unknown msgID 777","login":"libtest@gate-1","relogin":"libtest","echo":"after relogin"}`
	if got != want {
		t.Fatalf("library script:\n got %s\nwant %s", got, want)
	}

	// alice logs in again in a third page, on gate-2: the first page is
	// kicked and says why.
	alice2 := openPage(t, browser, "alice-again", base+"?ws="+url.QueryEscape(g2.WSURL()))
	alice2.login("alice", "gate-2")
	alice.waitText("#kicked", "logged in elsewhere")
	alice.waitText("#status", "offline")
	zed.send(t, chat.MsgSend, chatkit.MustJSON(t, chat.SendRequest{To: "alice", Text: "where are you now?"}))
	alice2.waitText("#log", "[zed] where are you now?")

	// The first page, kicked, as a test artifact.
	sctx, scancel := context.WithTimeout(alice.ctx, 20*time.Second)
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	scancel()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	dir := os.Getenv("ZC_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "browser-chat-kicked.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the kicked page: %s (%d bytes)", shot, len(png))
}
