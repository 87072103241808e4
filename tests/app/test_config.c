/* src/app/config.c: the YAML file of duplex serve. Every error kind must
 * name the right line; docs/duplex.example.yaml must load. */
#include "check.h"

#include "config.h"

#include <unistd.h>

static char tmp_path[64];

/* Writes yaml to a temporary file and loads it over cfg (defaults first
 * unless keep). */
static int load(const char *yaml, serve_config *cfg, char *err, size_t n,
                bool keep) {
  FILE *f = fopen(tmp_path, "w");
  if (!f) return -2;
  fputs(yaml, f);
  fclose(f);
  if (!keep) config_defaults(cfg);
  return config_load(tmp_path, cfg, err, n);
}

static size_t count(const char *const *l) {
  size_t n = 0;
  while (l && l[n])
    n++;
  return n;
}

static void test_defaults(void) {
  serve_config c;
  config_defaults(&c);
  CHECK_INT(c.port, 8080);
  CHECK(!c.host && !c.root && !c.tls_cert && !c.tls_key);
  CHECK_INT(c.threads, 0);
  CHECK(!c.echo && !c.origins);
  CHECK(c.deflate);
  CHECK_INT(c.history, 100);
  CHECK_INT(c.history_age_ms, 0);
  CHECK(c.rate == 100);
  CHECK_INT(c.burst, 200);
  CHECK_INT(c.max_subscriptions, 100);
  CHECK_INT(c.slow_consumer, SLOW_DROP);
  CHECK(!c.presence);
  CHECK_INT(c.max_message, 16 << 20);
  CHECK_INT(c.max_connections, 0);
  CHECK_INT(c.max_per_ip, 0);
  CHECK_INT(c.write_limit, 1 << 20);
  CHECK_INT(c.ping_interval_ms, 25000);
  CHECK_INT(c.pong_timeout_ms, 20000);
  CHECK_INT(c.handshake_timeout_ms, 10000);
  CHECK_INT(c.idle_timeout_ms, 0);
  CHECK_INT(c.close_timeout_ms, 5000);
  CHECK_INT(c.shutdown_code, 1012);
  CHECK_INT(c.log, LOG_TEXT);
  CHECK(!c.quiet);
  CHECK_INT(c.auth.mode, AUTH_OFF);
  CHECK_INT(c.auth.leeway, 30);
  CHECK_INT(c.auth.ticket_ttl, 30);
  CHECK_INT(c.auth.ticket_max, 10000);
  CHECK(!c.auth.api_keys && !c.auth.jwt_secret && !c.auth.jwt_public_key);
  CHECK(!c.auth.anonymous.subscribe && !c.auth.token.publish);
  config_free(&c);
}

/* The documented example: it must load and say what it says. */
static void test_example_file(void) {
  serve_config c;
  char err[512];
  config_defaults(&c);
  int rc = config_load(DX_SOURCE_DIR "/docs/duplex.example.yaml", &c, err,
                       sizeof err);
  if (rc) fprintf(stderr, "  %s\n", err);
  CHECK_INT(rc, 0);
  CHECK_INT(c.port, 8080);
  CHECK(!c.host);
  CHECK_STR(c.root, "web");
  CHECK_INT(c.threads, 0);
  CHECK(!c.tls_cert && !c.tls_key);
  CHECK_INT(count(c.echo), 1);
  CHECK_STR(c.echo[0], "/echo");
  CHECK_INT(count(c.origins), 2);
  CHECK_STR(c.origins[1], "http://127.0.0.1:8080");
  CHECK_INT(c.max_message, 16 << 20);
  CHECK_INT(c.ping_interval_ms, 25000);
  CHECK_INT(c.shutdown_code, 1012);
  CHECK_INT(c.auth.mode, AUTH_OFF);
  CHECK(!c.auth.api_keys); /* [] is "none" */
  CHECK_INT(count(c.auth.anonymous.subscribe), 1);
  CHECK_STR(c.auth.anonymous.subscribe[0], "*");
  CHECK(c.auth.anonymous.publish && !c.auth.anonymous.publish[0]);
  CHECK_INT(count(c.auth.token.publish), 1);
  /* Apart from root and echo, the example holds the defaults. */
  serve_config d;
  config_defaults(&d);
  c.root = NULL;
  c.echo = c.origins = NULL;
  c.auth.anonymous = d.auth.anonymous;
  c.auth.token = d.auth.token;
  void *mem = c.mem;
  c.mem = NULL;
  CHECK(memcmp(&c, &d, sizeof c) == 0);
  c.mem = mem;
  config_free(&c);
}

static const char FULL[] =
    "# every key, none at its default\n"
    "port: 9001\n"
    "host: 127.0.0.1\n"
    "root: /srv/www\n"
    "threads: 4\n"
    "tls: {cert: /etc/duplex/cert.pem, key: /etc/duplex/key.pem}\n"
    "echo: [/echo, /e2]\n"
    "origins:\n"
    "  - https://example.com\n"
    "deflate: no\n"
    "trusted_proxies: [10.0.0.0/8, '::1/128', 192.0.2.7]\n"
    "proxy_protocol: on\n"
    "history: 5000\n"
    "history_age: 10m\n"
    "rate: 2.5\n"
    "burst: 10\n"
    "max_subscriptions: 7\n"
    "slow_consumer: conflate\n"
    "presence: yes\n"
    "max_message: 64KiB\n"
    "max_connections: 100000\n"
    "max_per_ip: 50\n"
    "write_limit: 4MiB\n"
    "ping_interval: 0\n"
    "pong_timeout: 1500ms\n"
    "handshake_timeout: 3s\n"
    "idle_timeout: 1h\n"
    "close_timeout: 2\n"
    "shutdown_code: 4000\n"
    "log: json\n"
    "quiet: true\n"
    "auth:\n"
    "  mode: required\n"
    "  api_keys: [key-number-one-0001, 'key-number-two-0002']\n"
    "  jwt_secret: \"0123456789abcdef0123456789abcdef\"\n"
    "  jwt_public_key: /etc/duplex/jwt.pub\n"
    "  audience: duplex\n"
    "  issuer: https://id.example.com\n"
    "  leeway: 0\n"
    "  ticket_ttl: 1m\n"
    "  ticket_max: 50\n"
    "  anonymous:\n"
    "    subscribe: [public:*]\n"
    "    publish: []\n"
    "  token_grants: {subscribe: [news], publish: [chat:*, 'x']}\n";

static void test_full_file(void) {
  serve_config c;
  char err[512];
  int rc = load(FULL, &c, err, sizeof err, false);
  if (rc) fprintf(stderr, "  %s\n", err);
  CHECK_INT(rc, 0);
  CHECK_INT(c.port, 9001);
  CHECK_STR(c.host, "127.0.0.1");
  CHECK_STR(c.root, "/srv/www");
  CHECK_INT(c.threads, 4);
  CHECK_STR(c.tls_cert, "/etc/duplex/cert.pem");
  CHECK_STR(c.tls_key, "/etc/duplex/key.pem");
  CHECK_INT(count(c.echo), 2);
  CHECK_STR(c.echo[1], "/e2");
  CHECK_INT(count(c.origins), 1);
  CHECK_STR(c.origins[0], "https://example.com");
  CHECK(!c.deflate);
  CHECK_INT(count(c.trusted_proxies), 3);
  CHECK_STR(c.trusted_proxies[1], "::1/128");
  CHECK(c.proxy_protocol);
  CHECK_INT(c.history, 5000);
  CHECK_INT(c.history_age_ms, 600000);
  CHECK(c.rate == 2.5);
  CHECK_INT(c.burst, 10);
  CHECK_INT(c.max_subscriptions, 7);
  CHECK_INT(c.slow_consumer, SLOW_CONFLATE);
  CHECK(c.presence);
  CHECK_INT(c.max_message, 65536);
  CHECK_INT(c.max_connections, 100000);
  CHECK_INT(c.max_per_ip, 50);
  CHECK_INT(c.write_limit, 4 << 20);
  CHECK_INT(c.ping_interval_ms, 0);
  CHECK_INT(c.pong_timeout_ms, 1500);
  CHECK_INT(c.handshake_timeout_ms, 3000);
  CHECK_INT(c.idle_timeout_ms, 3600000);
  CHECK_INT(c.close_timeout_ms, 2000);
  CHECK_INT(c.shutdown_code, 4000);
  CHECK_INT(c.log, LOG_JSON);
  CHECK(c.quiet);
  CHECK_INT(c.auth.mode, AUTH_REQUIRED);
  CHECK_INT(count(c.auth.api_keys), 2);
  CHECK_STR(c.auth.api_keys[1], "key-number-two-0002");
  CHECK_STR(c.auth.jwt_secret, "0123456789abcdef0123456789abcdef");
  CHECK_STR(c.auth.jwt_public_key, "/etc/duplex/jwt.pub");
  CHECK_STR(c.auth.audience, "duplex");
  CHECK_STR(c.auth.issuer, "https://id.example.com");
  CHECK_INT(c.auth.leeway, 0);
  CHECK_INT(c.auth.ticket_ttl, 60);
  CHECK_INT(c.auth.ticket_max, 50);
  CHECK_INT(count(c.auth.anonymous.subscribe), 1);
  CHECK_STR(c.auth.anonymous.subscribe[0], "public:*");
  CHECK(c.auth.anonymous.publish && count(c.auth.anonymous.publish) == 0);
  CHECK_STR(c.auth.token.subscribe[0], "news");
  CHECK_INT(count(c.auth.token.publish), 2);
  CHECK_STR(c.auth.token.publish[1], "x");

  dx_server_config s = {0};
  config_to_server(&c, &s);
  CHECK_INT(s.port, 9001);
  CHECK_STR(s.host, "127.0.0.1");
  CHECK_STR(s.static_root, "/srv/www");
  CHECK_INT(s.threads, 4);
  CHECK_STR(s.tls_key, "/etc/duplex/key.pem");
  CHECK_INT(s.max_message, 65536);
  CHECK_INT(s.max_connections, 100000);
  CHECK_INT(s.max_per_ip, 50);
  CHECK_INT(s.ping_interval_ms, (unsigned)-1); /* 0: never */
  CHECK_INT(s.pong_timeout_ms, 1500);
  CHECK_INT(s.idle_timeout_ms, 3600000);
  CHECK_INT(s.write_hard, 4 << 20);
  CHECK_INT(s.write_high, 1 << 20);
  CHECK_INT(s.write_low, 256 << 10);
  CHECK_INT(s.shutdown_code, 4000);
  CHECK_STR(s.trusted_proxies[2], "192.0.2.7");
  CHECK(s.proxy_protocol);
  config_free(&c);
  CHECK(!c.mem);
  CHECK_INT(c.port, 8080); /* config_free resets to defaults */

  /* The same options from the auth config make a working auth object
   * (apart from the key file, which does not exist here). */
  CHECK_INT(load(FULL, &c, err, sizeof err, false), 0);
  c.auth.jwt_public_key = NULL;
  auth *a = auth_new(&c.auth, err, sizeof err);
  CHECK(a);
  auth_free(a);
  config_free(&c);
}

/* A file over values set before: keys in the file win, others stay. */
static void test_overlay_and_nulls(void) {
  serve_config c;
  char err[256];
  config_defaults(&c);
  c.port = 1234;
  c.host = "from-flag";
  CHECK_INT(
      load("host: file\nroot:\ntls: ~\nauth:\n", &c, err, sizeof err, true), 0);
  CHECK_INT(c.port, 1234);
  CHECK_STR(c.host, "file");
  CHECK(!c.root); /* null keeps the default */
  config_free(&c);
  CHECK_INT(load("", &c, err, sizeof err, false), 0);
  CHECK_INT(c.port, 8080);
  CHECK_INT(load("# only comments\n\n", &c, err, sizeof err, false), 0);
  CHECK_INT(load("---\n...\n", &c, err, sizeof err, false), 0);
  CHECK_INT(load("origins: []\necho: []\nthreads: auto\n", &c, err, sizeof err,
                 false),
            0);
  CHECK(!c.origins && !c.echo);
  config_free(&c);
  /* Anchors and aliases are YAML's own; they work. */
  CHECK_INT(load("origins: &o [https://a.example]\n"
                 "auth: {anonymous: {subscribe: [a], publish: [b]}}\n",
                 &c, err, sizeof err, false),
            0);
  CHECK_STR(c.origins[0], "https://a.example");
  config_free(&c);
}

/* tls: as a list of pairs: the first is the default, the rest go to
 * tls_sni in order; a key may be left out (it is in the cert file). */
static void test_tls_list(void) {
  serve_config c;
  char err[256] = "";
  CHECK_INT(load("tls:\n"
                 "  - {cert: a.pem, key: a.key}\n"
                 "  - cert: b.pem\n"
                 "    key: b.key\n"
                 "  - {cert: both.pem}\n",
                 &c, err, sizeof err, false),
            0);
  CHECK_STR(c.tls_cert, "a.pem");
  CHECK_STR(c.tls_key, "a.key");
  CHECK_INT(c.tls_nsni, 2);
  CHECK_STR(c.tls_sni[0].cert_file, "b.pem");
  CHECK_STR(c.tls_sni[0].key_file, "b.key");
  CHECK_STR(c.tls_sni[1].cert_file, "both.pem");
  CHECK(!c.tls_sni[1].key_file);
  dx_server_config s = {0};
  config_to_server(&c, &s);
  CHECK(s.tls_sni_certs == c.tls_sni && s.tls_nsni_certs == 2);
  config_free(&c);
  /* One item is the single-pair form; the mapping form has no extras. */
  CHECK_INT(load("tls: [{cert: a.pem}]\n", &c, err, sizeof err, false), 0);
  CHECK_STR(c.tls_cert, "a.pem");
  CHECK(!c.tls_key && !c.tls_sni && c.tls_nsni == 0);
  config_free(&c);
  CHECK_INT(
      load("tls: {cert: a.pem, key: a.key}\n", &c, err, sizeof err, false), 0);
  CHECK(!c.tls_sni && c.tls_nsni == 0);
  config_free(&c);
}

static void test_env(void) {
  serve_config c;
  char err[256];
  setenv("DX_TEST_PORT", "4242", 1);
  setenv("DX_TEST_SECRET", "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t", 1);
  setenv("DX_TEST_EMPTY", "", 1);
  int rc = load("port: ${DX_TEST_PORT}\n"
                "host: 'a$$b${DX_TEST_EMPTY}c$d'\n"
                "auth:\n"
                "  jwt_secret: \"${DX_TEST_SECRET}\"\n"
                "  api_keys: [\"k-${DX_TEST_SECRET}\"]\n",
                &c, err, sizeof err, false);
  if (rc) fprintf(stderr, "  %s\n", err);
  CHECK_INT(rc, 0);
  CHECK_INT(c.port, 4242);
  CHECK_STR(c.host, "a$bc$d");
  CHECK_STR(c.auth.jwt_secret, "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t");
  CHECK_STR(c.auth.api_keys[0], "k-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t");
  config_free(&c);
  /* The expanded value is checked like a literal one. */
  setenv("DX_TEST_PORT", "eighty", 1);
  CHECK_INT(load("\nport: ${DX_TEST_PORT}\n", &c, err, sizeof err, false), -1);
  char want[128];
  snprintf(want, sizeof want, "%s:2: port: 'eighty'", tmp_path);
  CHECK(strstr(err, want) == err);
  config_free(&c);
}

typedef struct bad_case {
  const char *yaml;
  int line;
  const char *says;
} bad_case;

static const bad_case BAD[] = {
    {"port: 1\nprot: 2\n", 2, "unknown key 'prot' (did you mean 'port'?)"},
    {"auth:\n  mode: off\n  moed: on\n", 3,
     "unknown key 'moed' in auth (did you mean 'mode'?)"},
    {"tls:\n  certificate: x\n", 2, "unknown key 'certificate' in tls"},
    {"zzzzzzzz: 1\n", 1, "(known: port, host, root"},
    {"port: 1\nhost: a\nport: 2\n", 3,
     "duplicate key 'port' (first at line 1)"},
    {"port: [1]\n", 1, "port: expected a number, got a list"},
    {"origins: https://x\n", 1, "origins: expected a list, got a scalar"},
    {"tls: yes\n", 1, "tls: expected a mapping, got a scalar"},
    {"host: {a: 1}\n", 1, "host: expected a string, got a mapping"},
    {"deflate: [true]\n", 1, "deflate: expected true or false, got a list"},
    {"\n\nport: 70000\n", 3, "port: '70000' is not a whole number in 0..65535"},
    {"port: -1\n", 1, "port: '-1'"},
    {"port: 80.5\n", 1, "port: '80.5'"},
    {"deflate: maybe\n", 1, "deflate: 'maybe' is not true or false"},
    {"log: xml\n", 1, "log: 'xml': text or json"},
    {"slow_consumer: block\n", 1,
     "slow_consumer: 'block': drop, skip or "
     "conflate"},
    {"auth: {mode: sometimes}\n", 1,
     "mode: 'sometimes': off, optional or "
     "required"},
    {"max_message: 12 parsecs\n", 1, "max_message: '12 parsecs' is not a size"},
    {"max_message: 0\n", 1, "max_message: '0' is not a size of at least 1"},
    {"write_limit: 512\n", 1,
     "write_limit: '512' is not a size of at least "
     "1024"},
    {"pong_timeout: 0\n", 1, "pong_timeout: '0' is not a positive duration"},
    {"ping_interval: soon\n", 1, "ping_interval: 'soon' is not a duration"},
    {"idle_timeout: -5s\n", 1, "idle_timeout: '-5s'"},
    {"close_timeout: nan\n", 1, "close_timeout: 'nan'"},
    {"shutdown_code: 1005\n", 1, "shutdown_code: '1005' is not a close code"},
    {"shutdown_code: 999\n", 1, "shutdown_code: '999'"},
    {"threads: 0\n", 1, "threads: '0': 1..255 or auto"},
    {"threads: 256\n", 1, "threads: '256'"},
    {"rate: -1\n", 1, "rate: '-1' is not a number in 0..1000000"},
    {"rate: inf\n", 1, "rate: 'inf'"},
    {"burst: 0\n", 1, "burst: '0' is not a whole number in 1..1000000"},
    {"max_subscriptions: 0\n", 1, "max_subscriptions: '0'"},
    {"echo: [/ok, nope]\n", 1, "echo: 'nope': a path starts with '/'"},
    {"echo:\n  - /ok\n  - [/nested]\n", 3,
     "echo: each item is a string, not "
     "a list"},
    {"origins:\n  -\n", 2, "origins: each item is a string, not null"},
    {"origins: ['']\n", 1, "origins: an empty string"},
    {"trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.1/8\n", 3,
     "trusted_proxies: '10.0.0.1/8': address bits are set past the prefix"},
    {"trusted_proxies: [10.0.0.0/33]\n", 1,
     "trusted_proxies: '10.0.0.0/33': an IPv4 prefix length is 0..32"},
    {"trusted_proxies: [lb.example.com]\n", 1,
     "trusted_proxies: 'lb.example.com': not an IPv4 or IPv6 address"},
    {"trusted_proxies: 10.0.0.0/8\n", 1,
     "trusted_proxies: expected a list, got a scalar"},
    {"proxy_protocol: v2\n", 1, "proxy_protocol: 'v2' is not true or false"},
    {"host: ''\n", 1, "host: an empty string"},
    {"auth:\n  anonymous:\n    subscribe:\n      - ok:*\n      - 'bad "
     "pattern'\n",
     5, "subscribe: 'bad pattern' is not a topic pattern"},
    {"auth:\n  token_grants: {publish: ['a*b']}\n", 2, "publish: 'a*b'"},
    {"auth:\n  jwt_secret: short\n", 2, "jwt_secret: at least 32 bytes"},
    {"auth:\n  api_keys:\n    - tiny\n", 3,
     "api_keys: an API key has at least "
     "16 characters"},
    {"auth:\n  leeway: 2h\n", 2,
     "leeway: '2h' is not whole seconds in "
     "0s..3600s"},
    {"auth:\n  ticket_ttl: 500ms\n", 2, "ticket_ttl: '500ms'"},
    {"auth:\n  ticket_ttl: 0\n", 2, "ticket_ttl: '0'"},
    {"auth:\n  ticket_max: 0\n", 2, "ticket_max: '0'"},
    {"tls:\n  key: k.pem\n", 2, "tls: key needs cert"},
    {"tls:\n  - {cert: a.pem}\n  - {key: b.key}\n", 3,
     "tls: item 2 needs cert"},
    {"tls: []\n", 1, "tls: an empty list"},
    {"tls:\n  - a.pem\n", 2,
     "tls: each item is a mapping {cert, key}, not a scalar"},
    {"tls:\n  - {cert: a.pem, crt: b}\n", 2, "unknown key 'crt' in tls"},
    {"host: ${DX_TEST_UNSET_VARIABLE}\n", 1,
     "${DX_TEST_UNSET_VARIABLE}: environment variable not set"},
    {"host: ${1abc}\n", 1, "bad ${...}"},
    {"host: ${OPEN\n", 1, "bad ${...}"},
    {"host: \"a\\0b\"\n", 1, "a NUL character in a value"},
    {"[a]: 1\n", 1, "a key is a plain name, not a list"},
    {"- port\n- host\n", 1,
     "the file is a mapping of options (key: value), "
     "not a list"},
    {"just words\n", 1, "not a scalar"},
    {"port: 1\n---\nport: 2\n", 3, "a second YAML document"},
    {"port: [1, 2\nhost: x\n", 2, "YAML: did not find expected ',' or ']'"},
    {"port: 1\n\thost: x\n", 2, "YAML: "},
    {"auth:\n  mode: off\n mode2: x\n", 3, "YAML: "},
    {"port: *nowhere\n", 1, "YAML: "},
};

static void test_errors(void) {
  for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
    serve_config c;
    char err[512] = "", want[128];
    int rc = load(BAD[i].yaml, &c, err, sizeof err, false);
    snprintf(want, sizeof want, "%s:%d: ", tmp_path, BAD[i].line);
    bool ok = rc == -1 && strncmp(err, want, strlen(want)) == 0 &&
              strstr(err, BAD[i].says);
    if (!ok)
      fprintf(stderr, "  case %zu: rc %d, got \"%s\", want \"%s...%s\"\n", i,
              rc, err, want, BAD[i].says);
    config_free(&c);
    CHECK(ok);
  }
}

static void test_missing_file(void) {
  serve_config c;
  char err[256];
  config_defaults(&c);
  CHECK_INT(config_load("/nonexistent/duplex.yaml", &c, err, sizeof err), -1);
  CHECK_STR(err, "/nonexistent/duplex.yaml: No such file or directory");
  /* A tiny error buffer truncates, never overflows. */
  char tiny[8];
  CHECK_INT(load("port: x\n", &c, tiny, sizeof tiny, false), -1);
  CHECK_INT(strlen(tiny), 7);
  config_free(&c);
}

static void test_parsers(void) {
  size_t sz;
  CHECK(config_parse_size("1048576", &sz) && sz == 1048576);
  CHECK(config_parse_size("64k", &sz) && sz == 65536);
  CHECK(config_parse_size("16MiB", &sz) && sz == 16u << 20);
  CHECK(config_parse_size("2g", &sz) && sz == 2ull << 30);
  CHECK(!config_parse_size("", &sz));
  CHECK(!config_parse_size("-1", &sz));
  CHECK(!config_parse_size(" 1", &sz));
  CHECK(!config_parse_size("1 MiB", &sz));
  CHECK(!config_parse_size("1TiB", &sz));
  CHECK(!config_parse_size("99999999999999999999", &sz));
  unsigned ms;
  CHECK(config_parse_duration("30s", &ms) && ms == 30000);
  CHECK(config_parse_duration("250ms", &ms) && ms == 250);
  CHECK(config_parse_duration("2m", &ms) && ms == 120000);
  CHECK(config_parse_duration("1h", &ms) && ms == 3600000);
  CHECK(config_parse_duration("5", &ms) && ms == 5000);
  CHECK(config_parse_duration("1.5s", &ms) && ms == 1500);
  CHECK(config_parse_duration(".5", &ms) && ms == 500);
  CHECK(config_parse_duration("0", &ms) && ms == 0);
  CHECK(!config_parse_duration("nan", &ms));
  CHECK(!config_parse_duration("inf", &ms));
  CHECK(!config_parse_duration(" 5", &ms));
  CHECK(!config_parse_duration("0x10", &ms));
  CHECK(!config_parse_duration("-1s", &ms));
  CHECK(!config_parse_duration("5 s", &ms));
  CHECK(!config_parse_duration("2d", &ms));
  CHECK(!config_parse_duration("5000h", &ms));
}

int main(void) {
  snprintf(tmp_path, sizeof tmp_path, "/tmp/dx_test_config_%d.yaml",
           (int)getpid());
  RUN(test_defaults);
  RUN(test_example_file);
  RUN(test_full_file);
  RUN(test_overlay_and_nulls);
  RUN(test_tls_list);
  RUN(test_env);
  RUN(test_errors);
  RUN(test_missing_file);
  RUN(test_parsers);
  unlink(tmp_path);
  return CHECK_DONE();
}
