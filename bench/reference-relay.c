/*
 * Reference relay for bench/modbus.ts: the least work any user-space TCP proxy can do per message. One thread,
 * one epoll set, one read() and one write() per chunk, no parsing, no timers, no limits. It is not part of
 * Sluice and never runs on a gateway; the benchmark runs it on the redirect of a flow of its own, so its
 * ratio against plain forwarding, measured in the same run, is the floor for the Modbus filter: a goal this
 * relay cannot meet in the lab cannot be met by a proxy that terminates TCP there, whatever its language.
 *
 *   reference-relay LISTEN_PORT UPSTREAM_IPV4 UPSTREAM_PORT [SPIN_US]
 *
 * SPIN_US > 0 busy-polls: after any event the relay keeps polling without sleeping for that many
 * microseconds, so a message arriving soon after the last one finds it awake (no wake-up of an idle CPU).
 * That trades a CPU for latency, which no gateway should do; the bench uses it to show what wake-ups cost.
 *
 * Prints {"ready":true} once listening. Sockets stay blocking for writes: a write that would block (a peer
 * not reading) simply waits, which a request/response benchmark never hits; reads never wait.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FD 65536

/** The other socket of each relayed pair, by descriptor; -1 once the pair is closed. */
static int peer[MAX_FD];

static long long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

static void pair_close(int ep, int fd) {
  int other = peer[fd];
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  epoll_ctl(ep, EPOLL_CTL_DEL, other, NULL);
  close(fd);
  close(other);
  peer[fd] = peer[other] = -1;
}

int main(int argc, char **argv) {
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: reference-relay LISTEN_PORT UPSTREAM_IPV4 UPSTREAM_PORT [SPIN_US]\n");
    return 2;
  }
  // A peer that vanished with an answer still to come must end its pair, not the relay (and the bench's floor).
  signal(SIGPIPE, SIG_IGN);
  int one = 1;
  struct sockaddr_in up = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[3]))};
  if (inet_pton(AF_INET, argv[2], &up.sin_addr) != 1) {
    fprintf(stderr, "reference-relay: bad upstream address %s\n", argv[2]);
    return 2;
  }
  struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
  int lsock = socket(AF_INET, SOCK_STREAM, 0);
  if (lsock < 0) {
    perror("reference-relay: socket");
    return 1;
  }
  setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lsock, (struct sockaddr *)&me, sizeof me) != 0 || listen(lsock, 1024) != 0) {
    perror("reference-relay: listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lsock};
  epoll_ctl(ep, EPOLL_CTL_ADD, lsock, &ev);
  printf("{\"ready\":true}\n");
  fflush(stdout);

  struct epoll_event events[256];
  static char buf[65536];
  const long long spin_us = argc == 5 ? atoll(argv[4]) : 0;
  long long last_event = 0;
  for (;;) {
    int n = epoll_wait(ep, events, 256, spin_us > 0 && now_us() - last_event < spin_us ? 0 : -1);
    if (n > 0 && spin_us > 0) last_event = now_us();
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == lsock) {
        int c = accept(lsock, NULL, NULL);
        if (c < 0) continue;
        int u = socket(AF_INET, SOCK_STREAM, 0);
        if (u < 0 || c >= MAX_FD || u >= MAX_FD || connect(u, (struct sockaddr *)&up, sizeof up) != 0) {
          close(c);
          if (u >= 0) close(u);
          continue;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        peer[c] = u;
        peer[u] = c;
        ev.data.fd = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        ev.data.fd = u;
        epoll_ctl(ep, EPOLL_CTL_ADD, u, &ev);
        continue;
      }
      // An event for a pair closed earlier in this batch (its number possibly reused since) reads nothing.
      if (peer[fd] < 0) continue;
      ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (got <= 0) {
        pair_close(ep, fd);
        continue;
      }
      for (ssize_t off = 0; off < got;) {
        ssize_t w = write(peer[fd], buf + off, (size_t)(got - off));
        if (w <= 0) {
          pair_close(ep, fd);
          break;
        }
        off += w;
      }
    }
  }
}
