// consensus/etcd/http_client.cc: the blocking HTTP/1.1 client.
#include "consensus/etcd/http_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace peerkv::consensus::etcd {

using Connection = HttpConnection;

struct HttpConnection {
  int fd = -1;
  // Bytes read but not consumed yet.
  std::string buffer;
  ~HttpConnection() {
    if (fd >= 0) close(fd);
  }
};

namespace {


int MillisLeft(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

// Waits for `events` on fd until the deadline. False on timeout.
absl::Status WaitFd(int fd, short events, absl::Time deadline, absl::string_view what) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    const int ms = MillisLeft(deadline);
    if (ms == 0) return absl::DeadlineExceededError(absl::StrCat(what, ": timed out"));
    const int ready = poll(&pfd, 1, ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      return absl::UnavailableError(absl::StrCat(what, ": poll: ", std::strerror(errno)));
    }
    if (ready == 0) continue;  // re-checks the deadline
    return absl::OkStatus();
  }
}

absl::Status WriteAll(int fd, absl::string_view data, absl::Time deadline) {
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      absl::Status status = WaitFd(fd, POLLOUT, deadline, "send");
      if (!status.ok()) return status;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Reads more bytes into conn.buffer. Returns the number read (0 at EOF).
absl::StatusOr<size_t> ReadMore(Connection& conn, absl::Time deadline) {
  for (;;) {
    char buf[65536];
    const ssize_t n = recv(conn.fd, buf, sizeof(buf), 0);
    if (n >= 0) {
      conn.buffer.append(buf, static_cast<size_t>(n));
      return static_cast<size_t>(n);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      absl::Status status = WaitFd(conn.fd, POLLIN, deadline, "receive");
      if (!status.ok()) return status;
      continue;
    }
    return absl::UnavailableError(absl::StrCat("receive: ", std::strerror(errno)));
  }
}

// Reads until conn.buffer holds "\r\n" (from `from`); returns its offset.
absl::StatusOr<size_t> ReadLine(Connection& conn, size_t from, size_t limit,
                                absl::Time deadline, bool& saw_bytes) {
  for (;;) {
    const size_t at = conn.buffer.find("\r\n", from);
    if (at != std::string::npos) return at;
    if (conn.buffer.size() > limit) {
      return absl::InternalError(absl::StrCat("answer line longer than ", limit, " bytes"));
    }
    absl::StatusOr<size_t> n = ReadMore(conn, deadline);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      return absl::UnavailableError(saw_bytes ? "connection closed inside the answer"
                                              : "connection closed before an answer");
    }
    saw_bytes = true;
  }
}

struct Head {
  int status = 0;
  bool chunked = false;
  bool has_length = false;
  size_t length = 0;
  bool close = false;
};

// Reads the status line and headers; leaves the body's first bytes in the
// buffer.
absl::StatusOr<Head> ReadHead(Connection& conn, absl::Time deadline, bool& saw_bytes) {
  saw_bytes = !conn.buffer.empty();
  size_t end;
  for (;;) {
    end = conn.buffer.find("\r\n\r\n");
    if (end != std::string::npos) break;
    if (conn.buffer.size() > kHttpMaxHeaderBytes) {
      return absl::InternalError(
          absl::StrCat("answer headers longer than ", kHttpMaxHeaderBytes, " bytes"));
    }
    absl::StatusOr<size_t> n = ReadMore(conn, deadline);
    if (!n.ok()) return n.status();
    if (*n == 0) {
      return absl::UnavailableError(saw_bytes ? "connection closed inside the answer headers"
                                              : "connection closed before an answer");
    }
    saw_bytes = true;
    // An answer that does not even start like HTTP is garbage: say so early.
    const size_t check = std::min<size_t>(conn.buffer.size(), 5);
    if (conn.buffer.compare(0, check, std::string("HTTP/").substr(0, check)) != 0) {
      return absl::InternalError(absl::StrCat(
          "the answer is not HTTP (starts with ",
          absl::CHexEscape(conn.buffer.substr(0, std::min<size_t>(conn.buffer.size(), 32))),
          ")"));
    }
  }
  std::string head = conn.buffer.substr(0, end);
  conn.buffer.erase(0, end + 4);
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  Head out;
  std::vector<absl::string_view> status_parts = absl::StrSplit(lines[0], absl::MaxSplits(' ', 2));
  if (status_parts.size() < 2 || !absl::StartsWith(status_parts[0], "HTTP/1.") ||
      status_parts[1].size() != 3 || !absl::SimpleAtoi(status_parts[1], &out.status) ||
      out.status < 100) {
    return absl::InternalError(
        absl::StrCat("malformed HTTP status line: ", absl::CHexEscape(lines[0].substr(0, 80))));
  }
  if (status_parts[0] == "HTTP/1.0") out.close = true;
  for (size_t i = 1; i < lines.size(); ++i) {
    const size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) {
      return absl::InternalError(
          absl::StrCat("malformed HTTP header line: ", absl::CHexEscape(lines[i].substr(0, 80))));
    }
    const std::string name = absl::AsciiStrToLower(lines[i].substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(lines[i].substr(colon + 1));
    if (name == "content-length") {
      if (!absl::SimpleAtoi(value, &out.length) || out.length > kHttpMaxBodyBytes) {
        return absl::InternalError(absl::StrCat("HTTP Content-Length '",
                                                absl::CHexEscape(value.substr(0, 40)),
                                                "' is not a number up to ", kHttpMaxBodyBytes));
      }
      out.has_length = true;
    } else if (name == "transfer-encoding") {
      if (absl::AsciiStrToLower(value) != "chunked") {
        return absl::InternalError(absl::StrCat("unsupported HTTP Transfer-Encoding '",
                                                absl::CHexEscape(value.substr(0, 40)), "'"));
      }
      out.chunked = true;
    } else if (name == "connection") {
      if (absl::AsciiStrToLower(value) == "close") out.close = true;
    }
  }
  return out;
}

// Reads the body, feeding it to `sink` (false: stop; the connection is then
// not reusable). Sets `complete` when the body ended as framed.
absl::Status ReadBody(Connection& conn, const Head& head, absl::Time deadline,
                      const std::function<bool(absl::string_view)>& sink, bool& complete) {
  complete = false;
  bool saw = true;
  if (head.chunked) {
    for (;;) {
      absl::StatusOr<size_t> eol = ReadLine(conn, 0, 1024, deadline, saw);
      if (!eol.ok()) return eol.status();
      absl::string_view size_text = absl::string_view(conn.buffer).substr(0, *eol);
      size_text = size_text.substr(0, size_text.find(';'));
      uint64_t size = 0;
      if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(size_text), &size) ||
          size > kHttpMaxBodyBytes) {
        return absl::InternalError(absl::StrCat("malformed HTTP chunk size '",
                                                absl::CHexEscape(size_text.substr(0, 40)), "'"));
      }
      conn.buffer.erase(0, *eol + 2);
      if (size == 0) {
        // Trailers, then the blank line.
        for (;;) {
          absl::StatusOr<size_t> t = ReadLine(conn, 0, kHttpMaxHeaderBytes, deadline, saw);
          if (!t.ok()) return t.status();
          conn.buffer.erase(0, *t + 2);
          if (*t == 0) break;
        }
        complete = true;
        return absl::OkStatus();
      }
      while (conn.buffer.size() < size + 2) {
        absl::StatusOr<size_t> n = ReadMore(conn, deadline);
        if (!n.ok()) return n.status();
        if (*n == 0) return absl::UnavailableError("connection closed inside an HTTP chunk");
      }
      if (conn.buffer.compare(size, 2, "\r\n") != 0) {
        return absl::InternalError("HTTP chunk not followed by CRLF");
      }
      const bool more = sink(absl::string_view(conn.buffer).substr(0, size));
      conn.buffer.erase(0, size + 2);
      if (!more) return absl::OkStatus();
    }
  }
  if (head.has_length) {
    while (conn.buffer.size() < head.length) {
      absl::StatusOr<size_t> n = ReadMore(conn, deadline);
      if (!n.ok()) return n.status();
      if (*n == 0) {
        return absl::UnavailableError(absl::StrCat("connection closed after ",
                                                   conn.buffer.size(), " of ", head.length,
                                                   " body bytes"));
      }
    }
    sink(absl::string_view(conn.buffer).substr(0, head.length));
    conn.buffer.erase(0, head.length);
    complete = true;
    return absl::OkStatus();
  }
  // No framing: the body runs to the end of the connection.
  for (;;) {
    if (!conn.buffer.empty()) {
      const bool more = sink(conn.buffer);
      conn.buffer.clear();
      if (!more) return absl::OkStatus();
    }
    absl::StatusOr<size_t> n = ReadMore(conn, deadline);
    if (!n.ok()) return n.status();
    if (*n == 0) return absl::OkStatus();
  }
}

std::string Request(const HttpUrl& url, absl::string_view path, absl::string_view body) {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: ", url.host, ":", url.port,
                      "\r\nContent-Type: application/json\r\nContent-Length: ", body.size(),
                      "\r\n\r\n", body);
}

}  // namespace

absl::StatusOr<HttpUrl> ParseHttpUrl(absl::string_view url) {
  auto bad = [url](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "etcd URL '", absl::CHexEscape(url.substr(0, 200)), "': ", why,
        " (expected http://HOST:PORT)"));
  };
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    if (absl::StartsWith(url, "https://")) return bad("https is not supported");
    return bad("must start with http://");
  }
  absl::ConsumeSuffix(&rest, "/");
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) return bad("no port");
  const absl::string_view host = rest.substr(0, colon);
  const absl::string_view port = rest.substr(colon + 1);
  if (host.empty()) return bad("no host");
  for (const char c : host) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') {
      return bad("the host may hold only letters, digits, '.' and '-'");
    }
  }
  uint32_t port_number = 0;
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(),
                   [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); }) ||
      !absl::SimpleAtoi(port, &port_number) || port_number == 0 || port_number > 65535) {
    return bad("the port must be a number from 1 to 65535");
  }
  HttpUrl out;
  out.host = std::string(host);
  out.port = static_cast<uint16_t>(port_number);
  out.text = std::string(url);
  return out;
}

HttpClient::HttpClient(HttpUrl url) : url_(std::move(url)) {}

HttpClient::~HttpClient() = default;

absl::StatusOr<std::unique_ptr<Connection>> HttpClient::Dial(absl::Time deadline) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = absl::StrCat(url_.port);
  const int rc = getaddrinfo(url_.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("resolve ", url_.host, ": ", gai_strerror(rc)));
  }
  sockaddr_in addr{};
  std::memcpy(&addr, res->ai_addr, std::min<size_t>(sizeof(addr), res->ai_addrlen));
  freeaddrinfo(res);
  auto conn = std::make_unique<Connection>();
  conn->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (conn->fd < 0) return absl::UnavailableError(absl::StrCat("socket: ", std::strerror(errno)));
  const int one = 1;
  setsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (connect(conn->fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS) {
      return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
    }
    absl::Status status = WaitFd(conn->fd, POLLOUT, deadline, "connect");
    if (!status.ok()) return status;
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(err)));
  }
  return conn;
}

std::unique_ptr<HttpConnection> HttpClient::TakeIdle() {
  for (;;) {
    std::unique_ptr<Connection> conn;
    {
      absl::MutexLock lock(&mu_);
      if (idle_.empty()) return nullptr;
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
    // An idle connection that is readable was closed by the server (or sent
    // something unasked): drop it rather than send a request into it.
    pollfd pfd{conn->fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) == 0 && conn->buffer.empty()) return conn;
  }
}

void HttpClient::ReturnIdle(std::unique_ptr<Connection> conn) {
  absl::MutexLock lock(&mu_);
  if (idle_.size() < kHttpMaxIdleConnections) idle_.push_back(std::move(conn));
}

absl::StatusOr<HttpResponse> HttpClient::Post(absl::string_view path, absl::string_view body,
                                              absl::Time deadline, bool idempotent,
                                              bool* sent) {
  const std::string request = Request(url_, path, body);
  if (sent != nullptr) *sent = false;
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<Connection> conn = TakeIdle();
    const bool reused = conn != nullptr;
    if (!reused) {
      absl::StatusOr<std::unique_ptr<Connection>> dialed = Dial(deadline);
      if (!dialed.ok()) return dialed.status();
      conn = *std::move(dialed);
    }
    bool saw_bytes = false;
    absl::Status status = WriteAll(conn->fd, request, deadline);
    if (status.ok() && sent != nullptr) *sent = true;
    absl::StatusOr<Head> head = status.ok() ? ReadHead(*conn, deadline, saw_bytes)
                                            : absl::StatusOr<Head>(status);
    if (!head.ok()) {
      if (reused && idempotent && !saw_bytes && attempt == 0 &&
          absl::IsUnavailable(head.status())) {
        continue;
      }
      return head.status();
    }
    HttpResponse response;
    response.status = head->status;
    bool complete = false;
    absl::Status too_big;
    status = ReadBody(*conn, *head, deadline,
                      [&](absl::string_view data) {
                        if (response.body.size() + data.size() > kHttpMaxBodyBytes) {
                          too_big = absl::InternalError(absl::StrCat(
                              "answer body longer than ", kHttpMaxBodyBytes, " bytes"));
                          return false;
                        }
                        response.body.append(data.data(), data.size());
                        return true;
                      },
                      complete);
    if (!too_big.ok()) return too_big;
    if (!status.ok()) return status;
    if (complete && !head->close) ReturnIdle(std::move(conn));
    return response;
  }
}

absl::Status HttpClient::Stream(absl::string_view path, absl::string_view body,
                                absl::Time deadline,
                                const std::function<bool(absl::string_view)>& on_data) {
  absl::StatusOr<std::unique_ptr<Connection>> conn = Dial(deadline);
  if (!conn.ok()) return conn.status();
  absl::Status status = WriteAll((*conn)->fd, Request(url_, path, body), deadline);
  if (!status.ok()) return status;
  bool saw_bytes = false;
  absl::StatusOr<Head> head = ReadHead(**conn, deadline, saw_bytes);
  if (!head.ok()) return head.status();
  std::string error_body;
  bool complete = false;
  if (head->status != 200) {
    status = ReadBody(**conn, *head, deadline,
                      [&](absl::string_view data) {
                        const absl::string_view part =
                            data.substr(0, 4096 - std::min<size_t>(4096, error_body.size()));
                        error_body.append(part.data(), part.size());
                        return error_body.size() < 4096;
                      },
                      complete);
    return absl::InternalError(absl::StrCat("HTTP status ", head->status, ": ",
                                            absl::CHexEscape(error_body.substr(0, 300))));
  }
  status = ReadBody(**conn, *head, deadline, on_data, complete);
  if (absl::IsDeadlineExceeded(status)) return absl::OkStatus();
  return status;
}

}  // namespace peerkv::consensus::etcd
