// rpc/batch_codec.h: the compact byte form in which a pull's
// records cross the network. A list of Cap'n Proto Record structs costs
// about 60 bytes of pointers and padding per record, as much as the key and
// a small value; this form costs a dozen (varint lengths, the keyspace said
// once per run of equal keyspaces). Decoding checks every length against
// the bytes present: a peer's bytes are input from outside.
#ifndef PEERKV_RPC_BATCH_CODEC_H_
#define PEERKV_RPC_BATCH_CODEC_H_

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "store/version.h"

namespace peerkv::rpc {

// Appends each record's keyspace, key, version, deletion flag, seq and
// value to one string.
std::string EncodeBatch(const std::vector<Record>& records);

// The records of an encoded batch, or InvalidArgument saying where the bytes
// stop making sense. At most `max_records` records are accepted.
// `expected_records`: how many the sender says it sent, if it says (room
// for that many, up to max_records, is made at once; the count itself is
// the caller's to check).
absl::StatusOr<std::vector<Record>> DecodeBatch(std::string_view bytes, size_t max_records,
                                                size_t expected_records = 0);

}  // namespace peerkv::rpc

#endif  // PEERKV_RPC_BATCH_CODEC_H_
