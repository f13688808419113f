// resp/protocol_fuzz_test.cc: a bounded fuzz of the RESP parser: random
// bytes, valid frames and mutations of valid frames, fed whole and in
// random pieces (as a socket delivers them). Checks that the parser never
// reads outside its input, never consumes nothing or more than it has,
// gives the same commands however the bytes are split, and reads back
// every valid frame as it was encoded. 20,000 cases from a fixed seed (at
// most two seconds); the seed is printed (PEERKV_FUZZ_SEED=N runs another).
#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "resp/protocol.h"

namespace peerkv::resp {
namespace {

struct Outcome {
  std::vector<std::vector<std::string>> commands;
  bool error = false;
  std::string error_text;
};

// Parses `in` as the server does, consuming command after command.
Outcome ParseAll(std::string_view in, const ParseLimits& limits) {
  Outcome out;
  std::vector<std::string_view> args;
  size_t pos = 0;
  while (pos < in.size()) {
    ParseResult r = ParseCommand(in.substr(pos), limits, &args);
    if (r.status == ParseStatus::kIncomplete) break;
    if (r.status == ParseStatus::kError) {
      out.error = true;
      out.error_text = r.error;
      break;
    }
    EXPECT_GT(r.consumed, 0u);
    EXPECT_LE(r.consumed, in.size() - pos);
    std::vector<std::string> copy;
    for (std::string_view a : args) {
      EXPECT_GE(a.data(), in.data() + pos);
      EXPECT_LE(a.data() + a.size(), in.data() + pos + r.consumed);
      copy.emplace_back(a);
    }
    out.commands.push_back(std::move(copy));
    pos += r.consumed;
  }
  return out;
}

// The same, with the bytes arriving in random pieces: a buffer that grows
// and is parsed after each piece.
Outcome ParseInPieces(std::string_view in, const ParseLimits& limits, std::mt19937_64& rng) {
  Outcome out;
  std::string buffer;
  std::vector<std::string_view> args;
  size_t fed = 0;
  while (fed < in.size() && !out.error) {
    const size_t piece = std::min<size_t>(in.size() - fed, 1 + rng() % 64);
    buffer.append(in.substr(fed, piece));
    fed += piece;
    while (!buffer.empty()) {
      ParseResult r = ParseCommand(buffer, limits, &args);
      if (r.status == ParseStatus::kIncomplete) break;
      if (r.status == ParseStatus::kError) {
        out.error = true;
        out.error_text = r.error;
        break;
      }
      std::vector<std::string> copy(args.begin(), args.end());
      out.commands.push_back(std::move(copy));
      buffer.erase(0, r.consumed);
    }
  }
  return out;
}

std::string RandomArg(std::mt19937_64& rng) {
  std::string a(rng() % 3 == 0 ? rng() % 200 : rng() % 12, '\0');
  for (char& c : a) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : 'a' + rng() % 26);
  return a;
}

std::string Encode(const std::vector<std::string>& args) {
  std::string out;
  Encoder e(&out, 2);
  e.Array(args.size());
  for (const std::string& a : args) e.Bulk(a);
  return out;
}

TEST(ProtocolFuzz, ParserHoldsItsInvariants) {
  // A fixed seed, so `make test` runs the same cases every time;
  // PEERKV_FUZZ_SEED=N explores (or replays) another.
  uint64_t seed = 20261202;
  if (const char* s = std::getenv("PEERKV_FUZZ_SEED")) seed = std::strtoull(s, nullptr, 10);
  std::printf("PEERKV_FUZZ_SEED=%llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  ParseLimits limits;
  limits.max_bulk_bytes = 150;
  limits.max_args = 8;
  limits.max_inline_bytes = 100;
  limits.max_command_bytes = 600;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  uint64_t cases = 0;
  uint64_t commands = 0;
  // Bounded both ways: 20,000 cases, or 2 s on a slow (sanitized, loaded)
  // machine, whichever comes first.
  constexpr uint64_t kMaxCases = 20'000;
  while (cases < kMaxCases && std::chrono::steady_clock::now() < deadline) {
    // Valid frames of random commands, concatenated.
    std::vector<std::vector<std::string>> sent;
    std::string stream;
    const int n = 1 + static_cast<int>(rng() % 5);
    for (int i = 0; i < n; ++i) {
      std::vector<std::string> args(1 + rng() % 6);
      for (std::string& a : args) a = RandomArg(rng);
      stream += Encode(args);
      sent.push_back(std::move(args));
    }
    std::string input = stream;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 1) {
      // Mutations: flip, insert, delete bytes.
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < edits && !input.empty(); ++i) {
        const size_t at = rng() % input.size();
        switch (rng() % 3) {
          case 0: input[at] = static_cast<char>(rng() % 256); break;
          case 1: input.insert(at, 1, "*$\r\n-0123456789"[rng() % 15]); break;
          default: input.erase(at, 1); break;
        }
      }
    } else if (kind == 2) {
      // Random bytes, biased towards the protocol's own.
      input.assign(rng() % 300, '\0');
      for (char& c : input) {
        c = rng() % 2 ? "*$\r\n:+-0123456789 "[rng() % 19] : static_cast<char>(rng() % 256);
      }
    } else if (kind == 3) {
      input = stream.substr(0, rng() % (stream.size() + 1));  // truncated
    }
    const Outcome whole = ParseAll(input, limits);
    const Outcome pieces = ParseInPieces(input, limits, rng);
    ASSERT_EQ(whole.commands, pieces.commands) << "seed " << seed << " case " << cases;
    ASSERT_EQ(whole.error, pieces.error) << "seed " << seed << " case " << cases;
    if (whole.error) {
      ASSERT_EQ(whole.error_text.rfind("Protocol error: ", 0), 0u);
    }
    bool within = true;
    for (const auto& args : sent) {
      size_t bytes = 0;
      for (const std::string& a : args) {
        bytes += a.size();
        within = within && a.size() <= limits.max_bulk_bytes;
      }
      within = within && bytes <= limits.max_command_bytes;
    }
    if (kind == 0 && within) {
      // Unchanged valid frames read back exactly.
      ASSERT_FALSE(whole.error) << whole.error_text << " seed " << seed;
      ASSERT_EQ(whole.commands, sent) << "seed " << seed;
    }
    if (kind == 3 && within) {
      // A truncated stream: a prefix of the commands, no error.
      ASSERT_FALSE(whole.error) << whole.error_text << " seed " << seed;
      ASSERT_LE(whole.commands.size(), sent.size());
      for (size_t i = 0; i < whole.commands.size(); ++i) ASSERT_EQ(whole.commands[i], sent[i]);
    }
    commands += whole.commands.size();
    ++cases;
  }
  std::printf("%llu cases, %llu commands parsed\n", static_cast<unsigned long long>(cases),
              static_cast<unsigned long long>(commands));
  EXPECT_GT(cases, 1000u);
}

}  // namespace
}  // namespace peerkv::resp
