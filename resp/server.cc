// resp/server.cc: the RESP front end's event loops (see server.h). Each
// loop owns its listening socket (SO_REUSEPORT: the kernel spreads new
// connections over the loops), its connections and an eventfd through
// which the store's writer thread hands back durable writes.
//
// Per connection: bytes read are parsed and run in order; replies go to an
// output buffer, or, while a write of the connection is in flight, to
// ordered slots, so replies leave in the order of the commands. Commands
// on named keys go on while the connection's writes are in flight (they
// see them through the session; a pipeline of SETs lands in one group
// commit); the others (SCAN, KEYS, DBSIZE, SELECT, ...) wait until the
// connection's writes are durable.
#include "resp/server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/macros.h"
#include "store/validation.h"

namespace peerkv::resp {
namespace {

constexpr uint64_t kListenTag = 0;
constexpr uint64_t kEventTag = 1;
constexpr size_t kReadChunk = 64 * 1024;
// Unparsed input kept while the connection's commands wait (for its writes
// or its reader): beyond it, nothing more is read until they move.
constexpr size_t kInputSoftLimit = 256 * 1024;
// A connection closed by the server (QUIT, a protocol error) is read and
// its bytes dropped for at most this long and this much before it is
// closed outright.
constexpr int64_t kDrainMs = 2000;
constexpr size_t kMaxDrainBytes = size_t{16} << 20;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
}

std::string PeerOf(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "unknown";
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    return absl::StrFormat("%s:%d", host, ntohs(in->sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return absl::StrFormat("[%s]:%d", host, ntohs(in6->sin6_port));
  }
  return "unknown";
}

// Splits "HOST:PORT" / "[V6]:PORT".
bool SplitHostPort(std::string_view listen, std::string* host, std::string* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == listen.size()) return false;
  std::string_view h = listen.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  *host = std::string(h);
  *port = std::string(listen.substr(colon + 1));
  for (char c : *port) {
    if (c < '0' || c > '9') return false;
  }
  return !host->empty() && port->size() <= 5;
}

// A listening socket on `host`:`port`, SO_REUSEPORT so that each loop has
// its own. Returns the fd and the port bound.
absl::StatusOr<std::pair<int, int>> ListenOn(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("cannot resolve '%s': %s", host, gai_strerror(rc)));
  }
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
      last_error = std::strerror(errno);
      close(fd);
      continue;
    }
    sockaddr_storage bound;
    socklen_t len = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    const int bound_port =
        bound.ss_family == AF_INET6
            ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
            : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    freeaddrinfo(found);
    return std::make_pair(fd, bound_port);
  }
  freeaddrinfo(found);
  return absl::UnavailableError(
      absl::StrFormat("cannot listen on %s:%s: %s", host, port, last_error));
}

// Writes handed back by the store's writer thread. Shared with the write
// callbacks, so a callback that runs after the loop ended finds it closed.
struct Completions {
  struct Done {
    uint64_t connection;
    uint64_t seq;
    absl::StatusOr<std::vector<Version>> result;
  };
  absl::Mutex mu;
  std::vector<Done> done ABSL_GUARDED_BY(mu);
  bool closed ABSL_GUARDED_BY(mu) = false;
  int event_fd = -1;

  void Push(Done d) {
    absl::MutexLock lock(&mu);
    if (closed) return;
    const bool wake = done.empty();
    done.push_back(std::move(d));
    if (wake) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = write(event_fd, &one, sizeof(one));
    }
  }
};

}  // namespace

bool IsLoopbackListen(std::string_view listen) {
  std::string host, port;
  if (!SplitHostPort(listen, &host, &port)) return false;
  if (host == "localhost" || host == "::1") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  return false;
}

class RespServer::Loop {
 public:
  Loop(RespServer& server, int listen_fd)
      : server_(server),
        options_(server.options_),
        listen_fd_(listen_fd),
        completions_(std::make_shared<Completions>()) {
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    PEERKV_CHECK(epoll_fd_ >= 0);
    completions_->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    PEERKV_CHECK(completions_->event_fd >= 0);
    Watch(listen_fd_, kListenTag, EPOLLIN, EPOLL_CTL_ADD);
    Watch(completions_->event_fd, kEventTag, EPOLLIN, EPOLL_CTL_ADD);
  }

  ~Loop() {
    Stop();
    if (thread_.joinable()) thread_.join();
    {
      absl::MutexLock lock(&completions_->mu);
      completions_->closed = true;
      close(completions_->event_fd);
      completions_->event_fd = -1;
    }
    if (listen_fd_ >= 0) close(listen_fd_);
    close(epoll_fd_);
  }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  void Stop() {
    if (stopping_.exchange(true)) return;
    const uint64_t one = 1;
    absl::MutexLock lock(&completions_->mu);
    if (completions_->event_fd >= 0) {
      [[maybe_unused]] ssize_t n = write(completions_->event_fd, &one, sizeof(one));
    }
  }

  void Join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Slot {
    uint64_t seq = 0;
    bool ready = false;
    std::string data;
    PendingWrite write;
  };

  struct Conn {
    Conn(RespServer& server, int fd, uint64_t id)
        : fd(fd),
          id(id),
          peer(PeerOf(fd)),
          session(*server.store_, server.config_, server.cursors_, server.stats_, id) {
      if (server.options_.tls != nullptr) {
        ssl = SSL_new(server.options_.tls.get());
        PEERKV_CHECK(ssl != nullptr);
        SSL_set_fd(ssl, fd);
        SSL_set_accept_state(ssl);
      }
    }
    ~Conn() {
      if (ssl != nullptr) SSL_free(ssl);
    }
    int fd;
    // TLS (--resp-tls), else null. OpenSSL reads and writes the socket;
    // a read that must write first waits for EPOLLOUT, and a write that
    // could not finish is retried with the same length.
    SSL* ssl = nullptr;
    bool tls_read_wants_write = false;
    int tls_write_len = 0;
    uint64_t id;
    std::string peer;
    Session session;
    std::string in;
    size_t in_off = 0;
    std::string out;
    size_t out_off = 0;
    std::deque<Slot> slots;
    uint64_t next_seq = 0;
    size_t writes_in_flight = 0;
    // The last parse wanted more bytes (a command part-way in).
    bool need_more = false;
    int64_t partial_since_ms = -1;
    // Close once everything queued is sent (QUIT, a protocol error, EOF).
    bool closing = false;
    // Run no further command (QUIT, a protocol error).
    bool quit = false;
    // Replies sent and our side shut: the client's remaining bytes are read
    // and dropped until it closes (closing at once, with its bytes unread,
    // would reset the connection and could destroy the error reply before
    // the client reads it).
    bool draining = false;
    int64_t draining_since_ms = 0;
    size_t drained = 0;
    uint32_t events = 0;

    size_t unparsed() const { return in.size() - in_off; }
    size_t queued() const { return out.size() - out_off; }
  };

  void Watch(int fd, uint64_t tag, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = tag;
    epoll_ctl(epoll_fd_, op, fd, &ev);
  }

  void Log(const std::string& line) {
    // At most one line a second per loop; the rest are counted.
    const int64_t now = NowMs();
    if (now - last_log_ms_ < 1000) {
      ++suppressed_logs_;
      return;
    }
    last_log_ms_ = now;
    std::string text = line;
    if (suppressed_logs_ > 0) {
      absl::StrAppend(&text, " (and ", suppressed_logs_, " more such lines since the last)");
      suppressed_logs_ = 0;
    }
    if (options_.log) {
      options_.log(text);
    } else {
      std::fprintf(stderr, "%s\n", text.c_str());
    }
  }

  void Run() {
    std::vector<epoll_event> events(256);
    const int tick_ms = std::clamp(options_.idle_timeout_ms / 4, 10, 1000);
    int64_t next_sweep = NowMs() + tick_ms;
    int64_t stop_deadline = -1;
    while (true) {
      if (stopping_.load() && stop_deadline < 0) {
        stop_deadline = NowMs() + options_.shutdown_grace_ms;
        if (listen_fd_ >= 0) {
          epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          close(listen_fd_);
          listen_fd_ = -1;
        }
      }
      if (stop_deadline >= 0) {
        bool idle = true;
        for (auto& [id, c] : conns_) {
          if (c->writes_in_flight > 0 || c->queued() > 0) idle = false;
        }
        if (idle || NowMs() >= stop_deadline) break;
      }
      const int timeout = stop_deadline >= 0 ? 1 : std::max<int64_t>(0, next_sweep - NowMs());
      const int n = epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout);
      for (int i = 0; i < n; ++i) {
        const uint64_t tag = events[i].data.u64;
        if (tag == kListenTag) {
          Accept();
        } else if (tag == kEventTag) {
          DrainCompletions();
        } else {
          auto it = conns_.find(tag);
          if (it == conns_.end()) continue;
          OnEvents(*it->second, events[i].events);
        }
      }
      if (NowMs() >= next_sweep) {
        Sweep();
        next_sweep = NowMs() + tick_ms;
      }
    }
    while (!conns_.empty()) CloseConn(*conns_.begin()->second);
  }

  void Accept() {
    while (listen_fd_ >= 0) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: stop accepting until the next sweep (else
          // the level-triggered listener would spin).
          Log(absl::StrFormat("peerkv: RESP accept failed: %s; retrying when connections close",
                              std::strerror(errno)));
          epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
          accept_paused_ = true;
          return;
        }
        Log(absl::StrFormat("peerkv: RESP accept failed: %s", std::strerror(errno)));
        return;
      }
      if (server_.stats_.connections.load() >= options_.max_connections) {
        static constexpr char kFull[] = "-ERR max number of clients reached\r\n";
        [[maybe_unused]] ssize_t w = send(fd, kFull, sizeof(kFull) - 1, MSG_NOSIGNAL);
        close(fd);
        server_.stats_.rejected_connections.fetch_add(1);
        // One log line per 10 s at most, with the count since the last.
        ++refused_unlogged_;
        const int64_t now = NowMs();
        if (refusal_logged_ms_ < 0 || now - refusal_logged_ms_ >= 10'000) {
          Log(absl::StrFormat(
              "peerkv: RESP refused %d connection(s): %d open, the limit is %d "
              "(--resp-max-connections)",
              refused_unlogged_, server_.stats_.connections.load(), options_.max_connections));
          refused_unlogged_ = 0;
          refusal_logged_ms_ = now;
        }
        continue;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      const uint64_t id = server_.next_id_.fetch_add(1);
      auto conn = std::make_unique<Conn>(server_, fd, id);
      conn->events = EPOLLIN;
      Watch(fd, id, EPOLLIN, EPOLL_CTL_ADD);
      conns_.emplace(id, std::move(conn));
      server_.stats_.connections.fetch_add(1);
      server_.stats_.connections_total.fetch_add(1);
    }
  }

  void CloseConn(Conn& c) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    server_.stats_.connections.fetch_sub(1);
    // Its writes still in flight commit; their answers find no connection.
    conns_.erase(c.id);
  }

  void OnEvents(Conn& c, uint32_t events) {
    if (c.draining) {
      const ssize_t n = recv(c.fd, read_buffer_.get(), kReadChunk, 0);
      if (n > 0) c.drained += static_cast<size_t>(n);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) || c.drained > kMaxDrainBytes) {
        CloseConn(c);
      }
      return;
    }
    if ((events & EPOLLIN) || (c.tls_read_wants_write && (events & EPOLLOUT))) {
      const ssize_t n = ReadSome(c);
      if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          CloseConn(c);
          return;
        }
        // The client is done sending: answer what it sent, then close.
        if (n == 0) c.closing = true;
      }
    } else if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLOUT)) {
      CloseConn(c);
      return;
    }
    Pump(c);
  }

  // Reads what has arrived and appends it to c.in: bytes read, 0 at the
  // end of the stream, -1 with errno (EAGAIN: nothing yet).
  ssize_t ReadSome(Conn& c) {
    if (c.ssl == nullptr) {
      // Into the loop's buffer, then appended: growing the connection's
      // string by a whole chunk first would zero 64 KiB per read (a fifth
      // of a GET's cost in the profile).
      const ssize_t n = recv(c.fd, read_buffer_.get(), kReadChunk, 0);
      if (n > 0) c.in.append(read_buffer_.get(), static_cast<size_t>(n));
      return n;
    }
    c.tls_read_wants_write = false;
    ssize_t total = 0;
    // A few records per event (each SSL_read returns one); the rest stay
    // in the socket, so the level-triggered loop comes back for them.
    for (int i = 0; i < 4; ++i) {
      ERR_clear_error();
      const int n = SSL_read(c.ssl, read_buffer_.get(), static_cast<int>(kReadChunk));
      if (n > 0) {
        c.in.append(read_buffer_.get(), static_cast<size_t>(n));
        total += n;
        continue;
      }
      const int error = SSL_get_error(c.ssl, n);
      if (total > 0) break;  // seen again at the next event
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        c.tls_read_wants_write = error == SSL_ERROR_WANT_WRITE;
        errno = EAGAIN;
        return -1;
      }
      if (error == SSL_ERROR_ZERO_RETURN) return 0;
      if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        if (errno == 0 || errno == ECONNRESET) return 0;
        return -1;
      }
      char text[256] = "unknown error";
      ERR_error_string_n(ERR_get_error(), text, sizeof(text));
      ERR_clear_error();
      Log(absl::StrFormat("peerkv: RESP closed connection from %s: TLS: %s (a client without "
                          "TLS on the --resp-tls port?)",
                          c.peer, text));
      errno = EPROTO;
      return -1;
    }
    return total;
  }

  // Sends up to `size` bytes of c.out: bytes sent, or -1 with errno.
  ssize_t SendSome(Conn& c) {
    if (c.ssl == nullptr) {
      return send(c.fd, c.out.data() + c.out_off, c.queued(), MSG_NOSIGNAL);
    }
    const int len = c.tls_write_len > 0
                        ? c.tls_write_len
                        : static_cast<int>(std::min<size_t>(c.queued(), size_t{1} << 20));
    ERR_clear_error();
    const int n = SSL_write(c.ssl, c.out.data() + c.out_off, len);
    if (n > 0) {
      c.tls_write_len = 0;
      return n;
    }
    const int error = SSL_get_error(c.ssl, n);
    if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
      c.tls_write_len = len;
      errno = EAGAIN;
      return -1;
    }
    ERR_clear_error();
    errno = EPIPE;
    return -1;
  }

  // Runs the commands that can run and sends their replies, until nothing
  // moves (a command incomplete, writes in flight, a reader that is slow).
  void Pump(Conn& c) {
    while (true) {
      if (!Process(c) || !Flush(c)) return;
      const bool more = c.unparsed() > 0 && !c.need_more && !c.quit && c.slots.empty() &&
                        c.queued() <= options_.output_soft_limit &&
                        c.writes_in_flight < options_.max_writes_in_flight;
      if (!more) return;
    }
  }

  // The reply of the next command: straight to the output while no write
  // is in flight, else to a slot of its own, in order.
  std::string* ReplyTarget(Conn& c) {
    if (c.slots.empty()) return &c.out;
    Slot& slot = c.slots.emplace_back();
    slot.seq = c.next_seq++;
    slot.ready = true;
    return &slot.data;
  }

  // False if it closed the connection.
  bool Process(Conn& c) {
    while (!c.quit) {
      if (c.queued() > options_.output_soft_limit) break;
      if (c.writes_in_flight >= options_.max_writes_in_flight) break;
      std::string_view view(c.in.data() + c.in_off, c.unparsed());
      if (view.empty()) {
        c.need_more = false;
        break;
      }
      ParseResult r = ParseCommand(view, server_.config_.limits, &args_);
      if (r.status == ParseStatus::kIncomplete) {
        c.need_more = true;
        break;
      }
      c.need_more = false;
      if (r.status == ParseStatus::kError) {
        server_.stats_.protocol_errors.fetch_add(1);
        Encoder(ReplyTarget(c), c.session.protocol()).Error("ERR " + r.error);
        Log(absl::StrFormat("peerkv: RESP closed connection from %s: %s", c.peer, r.error));
        c.in.clear();
        c.in_off = 0;
        c.quit = c.closing = true;
        break;
      }
      if (args_.empty()) {
        c.in_off += r.consumed;
        continue;
      }
      // Commands that do not name their keys wait for this connection's
      // writes (see Session::MayRunWithWritesInFlight).
      if (!c.slots.empty() && !Session::MayRunWithWritesInFlight(args_)) break;
      server_.stats_.commands.fetch_add(1, std::memory_order_relaxed);
      std::string* target = ReplyTarget(c);
      Slot* slot = target == &c.out ? nullptr : &c.slots.back();
      write_.mutations.clear();
      const Session::Outcome outcome = c.session.Execute(args_, target, &write_);
      c.in_off += r.consumed;
      if (outcome == Session::Outcome::kWrite) {
        if (slot == nullptr) {
          slot = &c.slots.emplace_back();
          slot->seq = c.next_seq++;
        }
        slot->ready = false;
        std::vector<Mutation> mutations = std::move(write_.mutations);
        slot->write = std::move(write_);
        ++c.writes_in_flight;
        server_.store_->WriteAsync(
            std::move(mutations),
            [completions = completions_, id = c.id,
             seq = slot->seq](absl::StatusOr<std::vector<Version>> result) {
              completions->Push(Completions::Done{id, seq, std::move(result)});
            });
      } else if (outcome == Session::Outcome::kClose) {
        c.quit = c.closing = true;
        break;
      }
      if (c.queued() > options_.output_hard_limit) {
        Log(absl::StrFormat(
            "peerkv: RESP closed connection from %s: %d bytes of replies queued, the limit is %d",
            c.peer, c.queued(), options_.output_hard_limit));
        c.out.clear();
        c.out_off = 0;
        CloseConn(c);
        return false;
      }
    }
    if (c.in_off == c.in.size()) {
      c.in.clear();
      c.in_off = 0;
    } else if (c.in_off > kReadChunk) {
      c.in.erase(0, c.in_off);
      c.in_off = 0;
    }
    if (c.need_more && c.unparsed() > 0) {
      if (c.partial_since_ms < 0) c.partial_since_ms = NowMs();
    } else {
      c.partial_since_ms = -1;
    }
    return true;
  }

  // Sends what is queued; closes a connection that is done; sets what to
  // wait for.
  bool Flush(Conn& c) {
    while (c.queued() > 0) {
      const ssize_t n = SendSome(c);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0 && errno == EINTR) continue;
      CloseConn(c);
      return false;
    }
    if (c.queued() == 0) {
      c.out.clear();
      c.out_off = 0;
      if (c.out.capacity() > options_.output_soft_limit) c.out.shrink_to_fit();
      if (c.closing && c.slots.empty() && (c.quit || c.unparsed() == 0 || c.need_more)) {
        if (!c.quit) {
          CloseConn(c);
          return false;
        }
        if (c.ssl != nullptr) {
          SSL_shutdown(c.ssl);  // close_notify, if the socket takes it
          ERR_clear_error();
        }
        shutdown(c.fd, SHUT_WR);
        c.draining = true;
        c.draining_since_ms = NowMs();
        c.in.clear();
        c.in_off = 0;
        c.events = EPOLLIN;
        Watch(c.fd, c.id, EPOLLIN, EPOLL_CTL_MOD);
        return false;
      }
    }
    uint32_t want = 0;
    if (c.queued() > 0 || c.tls_read_wants_write) want |= EPOLLOUT;
    const bool input_room =
        c.need_more || c.unparsed() < kInputSoftLimit;
    if (!c.closing && input_room && c.queued() <= options_.output_soft_limit &&
        c.writes_in_flight < options_.max_writes_in_flight) {
      want |= EPOLLIN;
    }
    if (want != c.events) {
      c.events = want;
      Watch(c.fd, c.id, want, EPOLL_CTL_MOD);
    }
    return true;
  }

  void DrainCompletions() {
    uint64_t count;
    [[maybe_unused]] ssize_t n = read(completions_->event_fd, &count, sizeof(count));
    std::vector<Completions::Done> done;
    {
      absl::MutexLock lock(&completions_->mu);
      done.swap(completions_->done);
    }
    // Connections touched, each processed once after all its answers.
    std::vector<uint64_t> touched;
    for (Completions::Done& d : done) {
      auto it = conns_.find(d.connection);
      if (it == conns_.end()) continue;
      Conn& c = *it->second;
      for (Slot& slot : c.slots) {
        if (slot.seq != d.seq) continue;
        c.session.FinishWrite(slot.write, d.result, &slot.data);
        slot.ready = true;
        slot.write = PendingWrite{};
        --c.writes_in_flight;
        break;
      }
      if (touched.empty() || touched.back() != c.id) touched.push_back(c.id);
    }
    for (uint64_t id : touched) {
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn& c = *it->second;
      while (!c.slots.empty() && c.slots.front().ready) {
        c.out.append(c.slots.front().data);
        c.slots.pop_front();
      }
      Pump(c);
    }
  }

  void Sweep() {
    if (accept_paused_ && listen_fd_ >= 0) {
      accept_paused_ = false;
      Watch(listen_fd_, kListenTag, EPOLLIN, EPOLL_CTL_ADD);
    }
    const int64_t now = NowMs();
    std::vector<Conn*> stale;
    for (auto& [id, c] : conns_) {
      if (c->draining) {
        if (now - c->draining_since_ms >= kDrainMs) stale.push_back(c.get());
        continue;
      }
      if (c->partial_since_ms >= 0 && now - c->partial_since_ms >= options_.idle_timeout_ms) {
        stale.push_back(c.get());
      }
    }
    for (Conn* c : stale) {
      if (c->draining) {
        CloseConn(*c);
        continue;
      }
      Log(absl::StrFormat("peerkv: RESP closed connection from %s: no complete command within %d ms",
                          c->peer, options_.idle_timeout_ms));
      CloseConn(*c);
    }
  }

  RespServer& server_;
  const RespOptions& options_;
  int listen_fd_;
  int epoll_fd_ = -1;
  std::shared_ptr<Completions> completions_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::unordered_map<uint64_t, std::unique_ptr<Conn>> conns_;
  bool accept_paused_ = false;
  uint64_t refused_unlogged_ = 0;
  int64_t refusal_logged_ms_ = -1;
  std::vector<std::string_view> args_;
  PendingWrite write_;
  std::unique_ptr<char[]> read_buffer_{new char[kReadChunk]};
  int64_t last_log_ms_ = -1'000'000;
  uint64_t suppressed_logs_ = 0;
};

RespServer::RespServer(Store* store, RespOptions options)
    : store_(store), options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<RespServer>> RespServer::Start(Store* store, RespOptions options) {
  std::string host, port;
  if (!SplitHostPort(options.listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--resp-listen '%s' must be HOST:PORT", options.listen));
  }
  if (options.threads < 1 || options.threads > 64) {
    return absl::InvalidArgumentError(
        absl::StrFormat("--resp-threads is %d; it must be 1..64", options.threads));
  }
  if (absl::Status s = ValidateKeyspace(options.default_keyspace); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--resp-keyspace: ", s.message()));
  }
  if (IsReservedKeyspace(options.default_keyspace)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--resp-keyspace '%s' is reserved for the system", options.default_keyspace));
  }
  const bool loopback = IsLoopbackListen(options.listen);
  if (options.insecure_loopback && !loopback) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--resp-insecure-loopback serves without authentication, so only on a loopback address "
        "(127.0.0.0/8, ::1, localhost); '%s' is not one",
        options.listen));
  }
  if (!loopback && options.tls == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--resp-listen %s is not a loopback address: AUTH tokens must not cross a network in "
        "clear text, so add --resp-tls (TLS with this device's certificate) or listen on "
        "loopback (127.0.0.0/8, ::1, localhost)",
        options.listen));
  }
  if (!options.insecure_loopback && !options.authenticate) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--resp-listen %s needs authentication, and this server has no token authenticator; "
        "on a loopback address, --resp-insecure-loopback serves without it",
        options.listen));
  }
  if (options.idle_timeout_ms < 100) {
    return absl::InvalidArgumentError(
        absl::StrFormat("RESP idle timeout is %d ms; at least 100", options.idle_timeout_ms));
  }
  auto server = std::unique_ptr<RespServer>(new RespServer(store, std::move(options)));
  const RespOptions& o = server->options_;
  SessionConfig& config = server->config_;
  config.default_keyspace = o.default_keyspace;
  config.require_auth = !o.insecure_loopback;
  config.authenticate = o.authenticate;
  config.is_strong = o.is_strong;
  config.access = o.access;
  config.user = o.user;
  config.peer_statuses = o.peer_statuses;
  config.replica_name = o.replica_name;
  config.started = absl::Now();
  const size_t value_limit = store->options().max_value_bytes;
  config.limits.max_bulk_bytes = value_limit;
  config.limits.max_command_bytes = 2 * value_limit + (size_t{1} << 20);

  int bound_port = 0;
  for (int i = 0; i < o.threads; ++i) {
    absl::StatusOr<std::pair<int, int>> listener =
        ListenOn(host, i == 0 ? port : absl::StrCat(bound_port));
    if (!listener.ok()) return listener.status();
    bound_port = listener->second;
    server->loops_.push_back(std::make_unique<Loop>(*server, listener->first));
  }
  config.address = host.find(':') != std::string::npos
                       ? absl::StrFormat("[%s]:%d", host, bound_port)
                       : absl::StrFormat("%s:%d", host, bound_port);
  for (auto& loop : server->loops_) loop->Start();
  return server;
}

void RespServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& loop : loops_) loop->Stop();
  for (auto& loop : loops_) loop->Join();
}

RespServer::~RespServer() {
  Stop();
  loops_.clear();
}

}  // namespace peerkv::resp
