// rpc/buffered_stream.cc: read buffering and write coalescing for sockets.
#include "rpc/buffered_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "kj/debug.h"

namespace peerkv::rpc {
namespace {

constexpr size_t kReadBufferBytes = 64 * 1024;
// Beyond this many bytes waiting, write() makes its caller wait for a flush.
constexpr size_t kMaxPendingBytes = 8 * 1024 * 1024;

}  // namespace

BufferedStream::BufferedStream(kj::Own<kj::AsyncIoStream> inner,
                               std::atomic<uint64_t>* bytes_written)
    : inner_(kj::mv(inner)),
      bytes_written_(bytes_written),
      read_buffer_(kj::heapArray<kj::byte>(kReadBufferBytes)) {}

BufferedStream::~BufferedStream() noexcept(false) {
  // Anyone still waiting for room learns the stream is gone.
  for (auto& w : waiters_) w->reject(KJ_EXCEPTION(DISCONNECTED, "stream destroyed"));
}

size_t BufferedStream::Take(kj::byte* out, size_t max) {
  const size_t n = std::min(max, read_end_ - read_begin_);
  std::memcpy(out, read_buffer_.begin() + read_begin_, n);
  read_begin_ += n;
  if (read_begin_ == read_end_) read_begin_ = read_end_ = 0;
  return n;
}

kj::Promise<size_t> BufferedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  auto* out = static_cast<kj::byte*>(buffer);
  const size_t have = Take(out, max_bytes);
  if (have >= min_bytes) return have;
  // A large read (a big value's segment) goes straight to the caller's
  // buffer: copying it through ours would only cost time.
  if (max_bytes - have >= kReadBufferBytes) {
    return inner_->tryRead(out + have, min_bytes - have, max_bytes - have)
        .then([this, have](size_t n) {
          Received(n);
          return have + n;
        });
  }
  // The buffer is empty here (Take drained it): refill it with whatever the
  // socket has, at least what the caller still needs.
  return inner_->tryRead(read_buffer_.begin(), min_bytes - have, read_buffer_.size())
      .then([this, out, have, max_bytes](size_t n) {
        Received(n);
        read_begin_ = 0;
        read_end_ = n;
        return have + Take(out + have, max_bytes - have);
      });
}

void BufferedStream::CountAsPeer(uint64_t replica_id) {
  if (peer_in_ != nullptr) return;
  const std::string id = absl::StrFormat("%016x", replica_id);
  peer_in_ = &metrics::Global().peer_bytes.Get({id, "in"});
  peer_out_ = &metrics::Global().peer_bytes.Get({id, "out"});
  peer_in_->Add(bytes_in_);
  peer_out_->Add(bytes_out_);
}

kj::Promise<void> BufferedStream::write(const void* buffer, size_t size) {
  kj::ArrayPtr<const kj::byte> piece(static_cast<const kj::byte*>(buffer), size);
  return write(kj::arrayPtr(&piece, 1));
}

kj::Promise<void> BufferedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
  for (const auto& piece : pieces) {
    pending_.append(reinterpret_cast<const char*>(piece.begin()), piece.size());
  }
  if (!flush_scheduled_ && !writing_) {
    flush_scheduled_ = true;
    // After every event queued now has run: one system call carries all the
    // replies this turn produced.
    flush_task_ = kj::evalLast([this] { return Flush(); })
                      .eagerlyEvaluate([this](kj::Exception&& e) {
                        write_error_ = kj::cp(e);
                        for (auto& w : waiters_) w->reject(kj::cp(e));
                        waiters_.clear();
                      });
  }
  if (pending_bytes() > kMaxPendingBytes) return WaitForRoom();
  return kj::READY_NOW;
}

kj::Promise<void> BufferedStream::WhenWritable() {
  KJ_IF_MAYBE(e, write_error_) { return kj::cp(*e); }
  if (pending_bytes() <= kMaxPendingBytes) return kj::READY_NOW;
  return WaitForRoom();
}

kj::Promise<void> BufferedStream::WaitForRoom() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  waiters_.add(kj::mv(paf.fulfiller));
  return kj::mv(paf.promise);
}

void BufferedStream::ReleaseWaiters() {
  if (pending_bytes() > kMaxPendingBytes) return;
  for (auto& w : waiters_) w->fulfill();
  waiters_.clear();
}

kj::Promise<void> BufferedStream::Flush() {
  flush_scheduled_ = false;
  if (pending_.empty()) {
    if (shutdown_requested_) inner_->shutdownWrite();
    return kj::READY_NOW;
  }
  writing_ = true;
  ++writes_;
  std::swap(pending_, inflight_);
  if (bytes_written_ != nullptr) *bytes_written_ += inflight_.size();
  bytes_out_ += inflight_.size();
  if (peer_out_ != nullptr) peer_out_->Add(inflight_.size());
  return inner_->write(inflight_.data(), inflight_.size()).then([this]() -> kj::Promise<void> {
    writing_ = false;
    inflight_.clear();
    ReleaseWaiters();
    if (pending_.empty()) {
      if (shutdown_requested_) inner_->shutdownWrite();
      return kj::READY_NOW;
    }
    flush_scheduled_ = true;
    return kj::evalLast([this] { return Flush(); });
  });
}

kj::Promise<void> BufferedStream::whenWriteDisconnected() {
  return inner_->whenWriteDisconnected();
}

void BufferedStream::shutdownWrite() {
  if (pending_bytes() == 0 && !flush_scheduled_) {
    inner_->shutdownWrite();
  } else {
    shutdown_requested_ = true;
  }
}

void BufferedStream::abortRead() { inner_->abortRead(); }
void BufferedStream::getsockopt(int level, int option, void* value, kj::uint* length) {
  inner_->getsockopt(level, option, value, length);
}
void BufferedStream::setsockopt(int level, int option, const void* value, kj::uint length) {
  inner_->setsockopt(level, option, value, length);
}
void BufferedStream::getsockname(struct sockaddr* addr, kj::uint* length) {
  inner_->getsockname(addr, length);
}
void BufferedStream::getpeername(struct sockaddr* addr, kj::uint* length) {
  inner_->getpeername(addr, length);
}
kj::Maybe<int> BufferedStream::getFd() const { return inner_->getFd(); }

}  // namespace peerkv::rpc
