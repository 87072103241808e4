/*
 * HTTP dates (RFC 9110 section 5.6.7). Formatting uses gmtime_r; parsing is
 * done by hand with a days-from-civil computation, so it depends neither on
 * the locale nor on the TZ environment (strptime and timegm would need
 * both to behave).
 */
#include "http/internal.h"

#include <stdio.h>
#include <string.h>

static const char days[7][10] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                 "Thursday", "Friday", "Saturday"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

int dx_http_date(time_t t, char out[30]) {
  struct tm tm;
  if (t < 0 || !gmtime_r(&t, &tm) || tm.tm_year + 1900 > 9999) return DX_EINVAL;
  /* Unsigned and masked so the compiler can see every field fits. */
  snprintf(out, 30, "%.3s, %02u %s %04u %02u:%02u:%02u GMT", days[tm.tm_wday],
           (unsigned)tm.tm_mday % 100u, months[tm.tm_mon],
           (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)tm.tm_hour % 100u,
           (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u);
  return 29;
}

/* A cursor over the input; every step fails cleanly at the end. */
struct cur {
  const char *p, *end;
};

static bool lit(struct cur *c, const char *s) {
  size_t n = strlen(s);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0) return false;
  c->p += n;
  return true;
}

/* Exactly n digits (a leading space stands for a zero when sp is set, as
 * in asctime's "Nov  6"). */
static bool num(struct cur *c, int n, bool sp, int *v) {
  if (c->end - c->p < n) return false;
  *v = 0;
  for (int i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)c->p[i];
    if (sp && i == 0 && ch == ' ') continue;
    if (!dx__is_digit(ch)) return false;
    *v = *v * 10 + (ch - '0');
  }
  c->p += n;
  return true;
}

static bool month(struct cur *c, int *m) {
  for (int i = 0; i < 12; i++)
    if (lit(c, months[i])) {
      *m = i + 1;
      return true;
    }
  return false;
}

/* The day name is checked for form only: it is redundant with the date. */
static bool day_name(struct cur *c, bool full) {
  for (int i = 0; i < 7; i++) {
    char shortname[4];
    memcpy(shortname, days[i], 3);
    shortname[3] = '\0';
    if (lit(c, full ? days[i] : shortname)) return true;
  }
  return false;
}

static bool clock_time(struct cur *c, int *h, int *mi, int *s) {
  return num(c, 2, false, h) && lit(c, ":") && num(c, 2, false, mi) &&
         lit(c, ":") && num(c, 2, false, s) && *h < 24 && *mi < 60 &&
         *s <= 60; /* 60: a leap second */
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static long long days_from_civil(long long y, int m, int d) {
  y -= m <= 2;
  long long era = (y >= 0 ? y : y - 399) / 400;
  long long yoe = y - era * 400;
  long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static bool valid_day(int y, int m, int d) {
  static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d >= 1 && d <= mdays[m - 1] + (m == 2 && leap);
}

int dx_http_date_parse(const char *s, size_t len, time_t *t) {
  struct cur c = {s, s + len};
  int y = 0, m = 0, d = 0, h = 0, mi = 0, sec = 0;
  bool ok;
  if (len == 29) { /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    ok = day_name(&c, false) && lit(&c, ", ") && num(&c, 2, false, &d) &&
         lit(&c, " ") && month(&c, &m) && lit(&c, " ") &&
         num(&c, 4, false, &y) && lit(&c, " ") &&
         clock_time(&c, &h, &mi, &sec) && lit(&c, " GMT");
  } else if (len == 24 && s[3] == ' ') { /* Sun Nov  6 08:49:37 1994 */
    ok = day_name(&c, false) && lit(&c, " ") && month(&c, &m) && lit(&c, " ") &&
         num(&c, 2, true, &d) && lit(&c, " ") &&
         clock_time(&c, &h, &mi, &sec) && lit(&c, " ") && num(&c, 4, false, &y);
  } else { /* Sunday, 06-Nov-94 08:49:37 GMT */
    ok = day_name(&c, true) && lit(&c, ", ") && num(&c, 2, false, &d) &&
         lit(&c, "-") && month(&c, &m) && lit(&c, "-") &&
         num(&c, 2, false, &y) && lit(&c, " ") &&
         clock_time(&c, &h, &mi, &sec) && lit(&c, " GMT");
    y += y < 70 ? 2000 : 1900;
  }
  if (!ok || c.p != c.end || !valid_day(y, m, d)) return DX_EINVAL;
  long long v = days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + sec;
  *t = (time_t)v;
  return 0;
}
