// bench/http_bench.cc: load for the HTTP front end of a running server
// (started with --http-insecure-loopback): GET of a 100-byte value from C
// keep-alive clients (one blocking socket and thread each; keys uniform
// below R), reporting requests/s and p50/p99; then the SSE write-to-event
// latency: a watcher on its own keyspace, a writer that PUTs one record at
// a time over HTTP, the time from sending the PUT to the event arriving.
// Usage: http_bench HOST:PORT [-c 50] [-n 200000] [-r 10000] [-d 100]
//        [--sse 500]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int Connect(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::atoi(address.substr(colon + 1).c_str())));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    std::perror("connect");
    std::exit(1);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) {
      std::perror("send");
      std::exit(1);
    }
    done += static_cast<size_t>(n);
  }
}

// Reads one response (Content-Length framed) into `body`; returns the code.
int ReadResponse(int fd, std::string& buffer, std::string* body) {
  for (;;) {
    const size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      const int code = std::atoi(buffer.c_str() + 9);
      size_t length = 0;
      const size_t cl = buffer.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) length = std::strtoul(buffer.c_str() + cl + 16, nullptr, 10);
      while (buffer.size() < end + 4 + length) {
        char chunk[65536];
        const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
        if (n <= 0) std::exit(1);
        buffer.append(chunk, static_cast<size_t>(n));
      }
      if (body != nullptr) *body = buffer.substr(end + 4, length);
      buffer.erase(0, end + 4 + length);
      return code;
    }
    char chunk[65536];
    const ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n <= 0) {
      std::fprintf(stderr, "connection closed\n");
      std::exit(1);
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: http_bench HOST:PORT [-c N] [-n N] [-r N] [-d N] [--sse N]\n");
    return 2;
  }
  const std::string address = argv[1];
  int clients = 50, keys = 10000, value_bytes = 100, sse = 500;
  long requests = 200000;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long v = std::atol(argv[i + 1]);
    if (flag == "-c") clients = static_cast<int>(v);
    else if (flag == "-n") requests = v;
    else if (flag == "-r") keys = static_cast<int>(v);
    else if (flag == "-d") value_bytes = static_cast<int>(v);
    else if (flag == "--sse") sse = static_cast<int>(v);
  }
  // Load the keys in batches of 1000.
  {
    const int fd = Connect(address);
    std::string buffer;
    const std::string value(value_bytes, 'v');
    for (int begin = 0; begin < keys; begin += 1000) {
      std::string body = "{\"writes\":[";
      for (int k = begin; k < std::min(keys, begin + 1000); ++k) {
        if (k > begin) body += ",";
        body += "{\"keyspace\":\"httpbench\",\"key\":\"key:" + std::to_string(k) +
                "\",\"value\":\"" + value + "\"}";
      }
      body += "]}";
      SendAll(fd, "POST /v1/batch HTTP/1.1\r\nHost: b\r\nContent-Length: " +
                      std::to_string(body.size()) + "\r\n\r\n" + body);
      if (ReadResponse(fd, buffer, nullptr) != 200) {
        std::fprintf(stderr, "load failed\n");
        return 1;
      }
    }
    ::close(fd);
  }
  // GET load.
  std::atomic<long> next{0};
  std::vector<std::vector<double>> latencies(clients);
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      const int fd = Connect(address);
      std::mt19937 rng(c + 1);
      std::string buffer, body;
      while (next.fetch_add(1) < requests) {
        const std::string req = "GET /v1/kv/httpbench/key:" + std::to_string(rng() % keys) +
                                " HTTP/1.1\r\nHost: b\r\n\r\n";
        const auto t0 = Clock::now();
        SendAll(fd, req);
        if (ReadResponse(fd, buffer, &body) != 200 || body.size() != static_cast<size_t>(value_bytes)) {
          std::fprintf(stderr, "bad GET answer\n");
          std::exit(1);
        }
        latencies[c].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      }
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::printf("HTTP GET: %.0f requests per second, p50=%.3f msec p99=%.3f msec (c=%d n=%ld d=%d)\n",
              static_cast<double>(all.size()) / seconds, Percentile(all, 0.5),
              Percentile(all, 0.99), clients, requests, value_bytes);
  // SSE write-to-event latency.
  if (sse > 0) {
    const int watcher = Connect(address);
    SendAll(watcher, "GET /v1/watch/httpbench-sse HTTP/1.1\r\nHost: b\r\n\r\n");
    std::string wbuf;
    while (wbuf.find("watching from seq") == std::string::npos) {
      char chunk[4096];
      const ssize_t n = ::recv(watcher, chunk, sizeof(chunk), 0);
      if (n <= 0) return 1;
      wbuf.append(chunk, static_cast<size_t>(n));
    }
    wbuf.clear();
    const int writer = Connect(address);
    std::string buffer;
    std::vector<double> sse_ms, ack_ms;
    for (int i = 0; i < sse; ++i) {
      const std::string marker = "m" + std::to_string(i) + "x";
      const auto t0 = Clock::now();
      SendAll(writer, "PUT /v1/kv/httpbench-sse/k HTTP/1.1\r\nHost: b\r\nContent-Length: " +
                          std::to_string(marker.size()) + "\r\n\r\n" + marker);
      // Both the event and the PUT's (durable) answer, timed as each comes.
      bool seen = false, acked = false;
      while (!seen || !acked) {
        pollfd fds[2] = {{watcher, POLLIN, 0}, {writer, POLLIN, 0}};
        if (::poll(fds, 2, 10'000) <= 0) return 1;
        char chunk[4096];
        if (!seen && (fds[0].revents & POLLIN)) {
          const ssize_t n = ::recv(watcher, chunk, sizeof(chunk), 0);
          if (n <= 0) return 1;
          wbuf.append(chunk, static_cast<size_t>(n));
          if (wbuf.find("\"" + marker + "\"") != std::string::npos) {
            seen = true;
            sse_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            wbuf.clear();
          }
        }
        if (!acked && (fds[1].revents & POLLIN)) {
          const ssize_t n = ::recv(writer, chunk, sizeof(chunk), 0);
          if (n <= 0) return 1;
          buffer.append(chunk, static_cast<size_t>(n));
          const size_t end = buffer.find("\r\n\r\n");
          if (end != std::string::npos && buffer.size() >= end + 4 + 8 &&
              buffer.find("}\n", end) != std::string::npos) {
            acked = true;
            ack_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            if (buffer.compare(0, 12, "HTTP/1.1 200") != 0) return 1;
            buffer.clear();
          }
        }
      }
    }
    std::printf("SSE write-to-event: p50=%.3f msec p99=%.3f msec max=%.3f msec (%d writes)\n",
                Percentile(sse_ms, 0.5), Percentile(sse_ms, 0.99),
                Percentile(sse_ms, 1.0), sse);
    std::printf("PUT durable ack (same writes): p50=%.3f msec p99=%.3f msec\n",
                Percentile(ack_ms, 0.5), Percentile(ack_ms, 0.99));
  }
  return 0;
}
