//! `slate purge` and `slate inspect`: the built binary against an instance running
//! in-process, and the exit codes scripts rely on (0 done, 1 refused or not found, 2 no
//! answer, 3 failed or not slate, 64 usage).

mod common;

use common::*;

const RULES: &str = "[[rules]]\npath = \"/s/\"\nttl = \"1h\"\n[[rules]]\npath = \"/t/\"\nttl = \"1h\"\ntags = [\"analytics\"]\n";

/// What one run of the binary left: exit code, stdout, stderr.
#[derive(Debug)]
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.out.trim())
            .unwrap_or_else(|e| panic!("--json printed no JSON ({e}): {self:?}"))
    }
}

/// Runs `slate ARGS` with `env` (and no `SLATE_TOKEN` from the test's own environment).
async fn slate(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_slate"))
        .args(args)
        .env_remove("SLATE_TOKEN")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the slate binary runs");
    Run {
        code: out.status.code().expect("exited, not killed"),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `slate SUBCOMMAND --admin <slate's admin listener> ARGS`.
async fn admin(s: &Slate, sub: &str, args: &[&str]) -> Run {
    let a = s.admin_url("");
    let mut all = vec![sub, "--admin", a.as_str()];
    all.extend_from_slice(args);
    slate(&all, &[]).await
}

async fn started(config: &str) -> (Origin, Slate) {
    let origin = Origin::start(tagged_origin()).await;
    let s = Slate::builder(&origin.url()).config(config).start().await;
    (origin, s)
}

const ALL: [&str; 5] = ["/s/a?x=1", "/s/a?x=2", "/s/ab", "/s/b", "/t/z"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_prefix_and_tag() {
    let (_o, s) = started(RULES).await;
    let c = client();
    fill(&c, &s, &ALL).await;

    // Exact, normalized like a GET (the utm_ parameter is ignored).
    let r = admin(&s, "purge", &["/s/a?utm_source=x&x=1"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("purged: url /s/a?x=1"), "{r:?}");
    assert!(!hit(&c, &s, "/s/a?x=1").await);
    assert!(hit(&c, &s, "/s/a?x=2").await && hit(&c, &s, "/s/ab").await);

    // --prefix, and the same as a trailing '*' (as PURGE takes it).
    fill(&c, &s, &ALL).await;
    let r = admin(&s, "purge", &["--prefix", "/s/a", "--json"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(
        (j["scope"].as_str(), j["soft"].as_bool()),
        (Some("prefix"), Some(false)),
        "{j}"
    );
    for u in ["/s/a?x=1", "/s/a?x=2", "/s/ab"] {
        assert!(!hit(&c, &s, u).await, "{u} purged by prefix");
    }
    assert!(
        hit(&c, &s, "/s/b").await && hit(&c, &s, "/t/z").await,
        "siblings stay"
    );
    let r = admin(&s, "purge", &["/s/*"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("purged: prefix /s/"), "{r:?}");
    assert!(!hit(&c, &s, "/s/b").await && hit(&c, &s, "/t/z").await);

    // By tag: the origin's Cache-Tag, several --tag meaning any of them.
    fill(&c, &s, &ALL).await;
    let r = admin(&s, "purge", &["--tag", "finance", "--tag", "nothing"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("purged: tags finance, nothing"), "{r:?}");
    assert!(!hit(&c, &s, "/s/b").await && !hit(&c, &s, "/s/ab").await);
    assert!(hit(&c, &s, "/t/z").await, "untagged by finance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_purge_marks_stale_and_inspect_shows_it() {
    let (_o, s) = started(RULES).await;
    let c = client();
    fill(&c, &s, &["/t/z"]).await;

    let r = admin(&s, "inspect", &["/t/z"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    for row in [
        "url             /t/z",
        "status          fresh (HTTP 200)",
        "tags            inventory, analytics",
        "rule            /t/",
        "found in        memory",
        "key             slate:v1:e:",
    ] {
        assert!(r.out.contains(row), "{row:?} in {}", r.out);
    }

    let r = admin(&s, "purge", &["--tag", "analytics", "--soft"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("marked stale: tags analytics"), "{r:?}");

    let r = admin(&s, "inspect", &["--json", "/t/z"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "soft-purged", "{j}");
    assert!(
        j["ttl_s"].as_i64().is_some() && j["size"].as_u64() > Some(0),
        "{j}"
    );
    let g = get(&c, &s.url("/t/z")).await;
    assert_eq!(
        g.cache().detail(),
        Some("soft-purged"),
        "{}",
        g.cache_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_rejected_exit_1() {
    let (_o, s) = started(RULES).await;
    let r = admin(&s, "inspect", &["/s/never"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("not found (404 Not Found)"), "{r:?}");
    assert!(r.out.is_empty(), "{r:?}");
    // With --json the 404's body still goes to stdout, for a script to read.
    let r = admin(&s, "inspect", &["--json", "/s/never"]).await;
    assert_eq!(
        (r.code, r.json()["status"].as_u64()),
        (1, Some(404)),
        "{r:?}"
    );

    // A prefix with a query is a malformed purge: 400, exit 1.
    let r = admin(&s, "purge", &["--prefix", "/s/a?x=1"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("refused (400 Bad Request)"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_without_the_token_and_allowed_with_it() {
    let config =
        format!("{RULES}[purge]\nallow = [\"192.0.2.0/24\"]\ntoken = \"back-office-token\"\n");
    let (_o, s) = started(&config).await;
    let c = client();
    fill(&c, &s, &["/s/b"]).await;

    // Loopback is outside purge.allow here: no token, a wrong one.
    for args in [&["/s/b"][..], &["--token", "wrong-token!", "/s/b"]] {
        let r = admin(&s, "purge", args).await;
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(r.err.contains("refused (403 Forbidden)"), "{r:?}");
        assert!(hit(&c, &s, "/s/b").await, "a refused purge changes nothing");
    }
    let r = admin(&s, "inspect", &["/s/b"]).await;
    assert_eq!(r.code, 1, "inspect is authorized like purges: {r:?}");

    let r = admin(&s, "inspect", &["--token", "back-office-token", "/s/b"]).await;
    assert_eq!(r.code, 0, "{r:?}");
    // SLATE_TOKEN stands for --token.
    let a = s.admin_url("");
    let r = slate(
        &["purge", "--admin", &a, "/s/b"],
        &[("SLATE_TOKEN", "back-office-token")],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!hit(&c, &s, "/s/b").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_exits_2() {
    // Nothing listens there.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = slate(&["purge", "--admin", &closed, "/a"], &[]).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("Connection refused"), "{r:?}");
    let r = slate(&["inspect", "--admin", &closed, "--json", "/a"], &[]).await;
    assert_eq!((r.code, r.out.as_str()), (2, ""), "{r:?}");

    // A listener that takes the connection (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent.local_addr().unwrap());
    let r = slate(
        &["inspect", "--admin", &silent, "--timeout", "200ms", "/a"],
        &[],
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.err.contains("no answer"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_foreign_answer_exits_3() {
    // slate's own 5xx: the store is gone, so the purge cannot be recorded.
    let mut redis = RedisServer::start();
    let origin = Origin::start(tagged_origin()).await;
    let s = Slate::builder(&origin.url())
        .store(&StoreUnderTest::Redis(redis.url()))
        .config(RULES)
        .start()
        .await;
    let c = client();
    fill(&c, &s, &["/s/b"]).await;
    redis.kill();
    let r = admin(&s, "purge", &["--prefix", "/s/"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.err.contains("failed (503"), "{r:?}");

    // Something else at that address: a 200 that is not slate's JSON, a 500 of its own.
    let foreign = Origin::start(|p, _| match p.uri.path() {
        "/purge" => Reply::ok("<html>a login page</html>"),
        _ => Reply::ok("oops").status(500),
    })
    .await;
    let r = slate(&["purge", "--admin", &foreign.url(), "/a"], &[]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.err.contains("not slate's answer"), "{r:?}");
    let r = slate(&["inspect", "--admin", &foreign.url(), "/a"], &[]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.err.contains("failed (500"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_64_and_help_lists_every_subcommand() {
    let r = slate(&["purge"], &[]).await;
    assert_eq!(r.code, 64, "nothing to purge: {r:?}");
    let r = slate(&["purge", "/a", "--prefix", "/b"], &[]).await;
    assert_eq!(r.code, 64, "two forms at once: {r:?}");
    let r = slate(&["purge", "--admin", "https://10.0.0.5:9091", "/a"], &[]).await;
    assert_eq!(r.code, 64, "{r:?}");
    assert!(r.err.contains("not supported"), "{r:?}");
    let r = slate(&["inspect", "-H", "no colon", "/a"], &[]).await;
    assert_eq!(r.code, 64, "{r:?}");

    let r = slate(&["--help"], &[]).await;
    assert_eq!(r.code, 0, "{r:?}");
    for example in [
        "slate check-config ",
        "slate --demo",
        "slate demo-origin ",
        "slate purge '/",
        "slate purge --prefix ",
        "slate purge --tag ",
        "slate inspect '/",
        "Exit codes",
    ] {
        assert!(r.out.contains(example), "{example:?} in --help:\n{}", r.out);
    }
    let r = slate(&["purge", "--help"], &[]).await;
    for flag in [
        "--admin",
        "--token",
        "SLATE_TOKEN",
        "--json",
        "--timeout",
        "--soft",
    ] {
        assert!(r.out.contains(flag), "{flag} in purge --help:\n{}", r.out);
    }
}
