// rpc/buffered_stream.h: a socket wrapper that turns many small reads and
// writes into few system calls. Cap'n Proto reads each message with at
// least two read(2) calls and writes each with its own writev(2); with
// pipelined requests that made the kernel the main cost (43% of the server's
// profile). Reads here are served from a 64 KiB buffer; writes are gathered
// and flushed once per turn of the event loop (kj::evalLast), with
// backpressure once too much is waiting. Internal to rpc/.
#ifndef PEERKV_RPC_BUFFERED_STREAM_H_
#define PEERKV_RPC_BUFFERED_STREAM_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "common/metrics.h"
#include "kj/async-io.h"
#include "kj/vector.h"

namespace peerkv::rpc {

class BufferedStream final : public kj::AsyncIoStream {
 public:
  // `bytes_written`, if given, is increased by every byte handed to the
  // socket (a server's traffic counter); it must outlive the stream.
  explicit BufferedStream(kj::Own<kj::AsyncIoStream> inner,
                          std::atomic<uint64_t>* bytes_written = nullptr);
  ~BufferedStream() noexcept(false);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> whenWriteDisconnected() override;
  // Sends what is buffered first, then shuts the write side down.
  void shutdownWrite() override;
  void abortRead() override;
  void getsockopt(int level, int option, void* value, kj::uint* length) override;
  void setsockopt(int level, int option, const void* value, kj::uint length) override;
  void getsockname(struct sockaddr* addr, kj::uint* length) override;
  void getpeername(struct sockaddr* addr, kj::uint* length) override;
  kj::Maybe<int> getFd() const override;

  // Bytes that arrived from the socket, and those of them handed to the
  // reader (the rest wait in the read buffer). A server tells from them
  // whether a client is part-way through a message.
  uint64_t bytes_in() const { return bytes_in_; }
  uint64_t bytes_taken() const { return bytes_in_ - (read_end_ - read_begin_); }

  // From now on (and for the bytes so far) the traffic of this stream is
  // replica `replica_id`'s, a peer whose link runs on it: counted in
  // peerkv_peer_{received,sent}_bytes_total (metrics::Registry::peer_bytes).
  // Once per stream; later calls are ignored.
  void CountAsPeer(uint64_t replica_id);

  // Socket writes so far (one per flush that had bytes to send).
  uint64_t writes() const { return writes_; }

  // Bytes accepted by write() and not yet handed to the socket.
  size_t pending_bytes() const { return pending_.size() + inflight_.size(); }

  // Resolves once the bytes waiting to be written are under the bound: a
  // server waits for it before reading the next request, so a client that
  // sends requests but does not read the answers stops being served
  // instead of making the server buffer them.
  kj::Promise<void> WhenWritable();

 private:
  size_t Take(kj::byte* out, size_t max);
  kj::Promise<void> Flush();
  kj::Promise<void> WaitForRoom();
  void ReleaseWaiters();

  kj::Own<kj::AsyncIoStream> inner_;
  std::atomic<uint64_t>* const bytes_written_;
  // Read side: bytes [read_begin_, read_end_) of read_buffer_ are unread.
  kj::Array<kj::byte> read_buffer_;
  size_t read_begin_ = 0;
  size_t read_end_ = 0;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;  // handed to the socket
  uint64_t writes_ = 0;
  // The peer's counters (CountAsPeer), or null.
  metrics::Counter* peer_in_ = nullptr;
  metrics::Counter* peer_out_ = nullptr;
  void Received(size_t n) {
    bytes_in_ += n;
    if (peer_in_ != nullptr) peer_in_->Add(n);
  }
  // Write side.
  std::string pending_;   // accepted, waiting for the next flush
  std::string inflight_;  // being written to the socket
  bool flush_scheduled_ = false;
  bool writing_ = false;
  bool shutdown_requested_ = false;
  kj::Maybe<kj::Exception> write_error_;
  kj::Vector<kj::Own<kj::PromiseFulfiller<void>>> waiters_;
  kj::Promise<void> flush_task_ = nullptr;
};

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_BUFFERED_STREAM_H_
