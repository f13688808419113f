// common/log.h: one-line log messages on stderr, each with a UTC timestamp,
// written whole even when several threads log at once. Servers log where
// they listen, when they stop, and every request they reject.
#ifndef PEERKV_COMMON_LOG_H_
#define PEERKV_COMMON_LOG_H_

#include <string_view>

namespace peerkv {

// Writes "2026-11-25T19:31:00.123Z <message>\n" to stderr in one write.
void LogLine(std::string_view message);

}  // namespace peerkv

#endif  // PEERKV_COMMON_LOG_H_
