#include "connection_gate.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "t2/common/log.hpp"

namespace t2::server {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kDrainTime{2000};  // reading a refused request's rest, so the client sees the refusal
constexpr int kSweepEveryMs = 100;

// Waits for `events` on `fd`; the revents, or 0 on time-out.
short wait_for(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, static_cast<short>(events | POLLRDHUP), 0};
  for (;;) {
    const int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n > 0) return p.revents;
    if (n == 0) return 0;
    if (errno != EINTR) return POLLERR;
  }
}

// Where the header of the request at the start of `buffer` ends (past its blank line), or npos.
size_t header_end(const std::string& buffer) {
  const size_t crlf = buffer.find("\r\n\r\n");
  const size_t lf = buffer.find("\n\n");
  if (crlf == std::string::npos && lf == std::string::npos) return std::string::npos;
  if (lf == std::string::npos || (crlf != std::string::npos && crlf < lf)) return crlf + 4;
  return lf + 2;
}

bool iequals_prefix(const std::string& line, const char* name) {
  const size_t n = std::strlen(name);
  if (line.size() < n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

// The Content-Length of a header (0 when absent; -1 when malformed or chunked: the worker reads that body itself).
long long content_length(const std::string& header) {
  size_t at = header.find('\n');
  while (at != std::string::npos && at + 1 < header.size()) {
    const size_t next = header.find('\n', at + 1);
    const std::string line = header.substr(at + 1, (next == std::string::npos ? header.size() : next) - at - 1);
    if (iequals_prefix(line, "transfer-encoding:")) return -1;
    if (iequals_prefix(line, "content-length:")) {
      const std::string value = line.substr(15);
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(value.c_str(), &end, 10);
      if (errno != 0 || end == value.c_str() || v < 0) return -1;
      return v;
    }
    at = next;
  }
  return 0;
}

// Whether the header asks for "100 Continue" before its body is sent (curl does for bodies over 1 KiB).
bool expects_continue(const std::string& header) {
  std::string lower(header.size(), '\0');
  std::transform(header.begin(), header.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find("\nexpect: 100-continue") != std::string::npos || lower.find("\nexpect:100-continue") != std::string::npos;
}

std::string address_of(const sockaddr_storage& addr, int& port) {
  char text[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
    port = ntohs(a.sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &a.sin6_addr, text, sizeof text);
    port = ntohs(a.sin6_port);
  }
  return text;
}

}  // namespace

Connection::Connection(int socket) : fd(socket) {}

Connection::~Connection() {
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

ConnectionStream::ConnectionStream(Connection& connection, std::chrono::milliseconds io_timeout)
    : connection_(connection), io_timeout_(io_timeout) {}

bool ConnectionStream::is_readable() const {
  return position_ < connection_.buffer.size() || (wait_for(connection_.fd, POLLIN, io_timeout_) & POLLIN) != 0;
}

bool ConnectionStream::is_writable() const {
  const short r = wait_for(connection_.fd, POLLOUT, io_timeout_);
  return (r & POLLOUT) != 0 && (r & (POLLRDHUP | POLLHUP | POLLERR)) == 0;
}

ssize_t ConnectionStream::read(char* ptr, size_t size) {
  if (position_ < connection_.buffer.size()) {
    const size_t n = std::min(size, connection_.buffer.size() - position_);
    std::memcpy(ptr, connection_.buffer.data() + position_, n);
    position_ += n;
    return static_cast<ssize_t>(n);
  }
  for (;;) {
    const ssize_t n = ::recv(connection_.fd, ptr, size, MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if ((wait_for(connection_.fd, POLLIN, io_timeout_) & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) == 0) return -1;
  }
}

ssize_t ConnectionStream::write(const char* ptr, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::send(connection_.fd, ptr + done, size - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    if ((wait_for(connection_.fd, POLLOUT, io_timeout_) & POLLOUT) == 0) return -1;
  }
  return static_cast<ssize_t>(done);
}

void ConnectionStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  port = -1;
  if (::getpeername(connection_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip = address_of(addr, port);
}

void ConnectionStream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  port = -1;
  if (::getsockname(connection_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip = address_of(addr, port);
}

void ConnectionStream::consume() {
  connection_.buffer.erase(0, position_);
  position_ = 0;
}

bool peer_connected(int fd) {
  const short r = wait_for(fd, POLLIN, std::chrono::milliseconds(0));
  if ((r & (POLLRDHUP | POLLHUP | POLLERR)) != 0) return false;
  if ((r & POLLIN) != 0) {
    char byte = 0;
    return ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) != 0;  // 0: an orderly close
  }
  return true;
}

ConnectionGate::ConnectionGate(GateLimits limits, Serve serve, Refusal refusal)
    : limits_(limits), serve_(std::move(serve)), refusal_(std::move(refusal)) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "connection gate");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  watcher_ = std::thread([this] { watch_loop(); });
  for (size_t i = 0; i < std::max<size_t>(limits_.workers, 1); ++i) workers_.emplace_back([this] { work_loop(); });
}

ConnectionGate::~ConnectionGate() {
  shutdown();
  ::close(epoll_fd_);
  ::close(wake_fd_);
}

void ConnectionGate::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t written = ::write(wake_fd_, &one, sizeof one);
  work_ready_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  for (auto& w : workers_) w.join();
  workers_.clear();
  std::lock_guard<std::mutex> lock(mutex_);
  watched_.clear();
  ready_.clear();
}

void ConnectionGate::adopt(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  auto c = std::make_unique<Connection>(fd);
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_ || watched_.size() + ready_.size() + serving_ >= limits_.max_connections) return;  // closed by ~Connection
  c->deadline = Clock::now() + limits_.idle_timeout;
  watch(std::move(c));
}

void ConnectionGate::watch(std::unique_ptr<Connection> c) {
  const int fd = c->fd;
  auto [it, inserted] = watched_.emplace(fd, std::move(c));
  if (!inserted) return;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    watched_.erase(it);
    return;
  }
  if (!it->second->buffer.empty()) {  // a pipelined request is already (partly) here
    it->second->state = Connection::State::kHeader;
    it->second->deadline = Clock::now() + limits_.header_timeout;
    advance(it);
  }
}

bool ConnectionGate::read_available(Connection& c) {
  char chunk[16384];
  for (;;) {
    const ssize_t n = ::recv(c.fd, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      if (c.state == Connection::State::kDraining) continue;  // discarded
      if (c.state == Connection::State::kIdle) {
        c.state = Connection::State::kHeader;
        c.deadline = Clock::now() + limits_.header_timeout;
      }
      c.buffer.append(chunk, static_cast<size_t>(n));
      if (c.buffer.size() > limits_.max_header_bytes + limits_.max_body_bytes) return true;  // advance() refuses it
      continue;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

void ConnectionGate::refuse(Connection& c, int status) {
  const std::string response = refusal_(status);
  [[maybe_unused]] const ssize_t sent = ::send(c.fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  ::shutdown(c.fd, SHUT_WR);
  c.state = Connection::State::kDraining;
  std::string().swap(c.buffer);  // its memory goes back now
  c.deadline = Clock::now() + kDrainTime;
}

void ConnectionGate::advance(std::map<int, std::unique_ptr<Connection>>::iterator it) {
  Connection& c = *it->second;
  if (c.state == Connection::State::kHeader) {
    const size_t end = header_end(c.buffer);
    if (end == std::string::npos) {
      if (c.buffer.size() > limits_.max_header_bytes) refuse(c, 431);
      return;
    }
    if (end > limits_.max_header_bytes) {
      refuse(c, 431);
      return;
    }
    const long long body = content_length(c.buffer.substr(0, end));
    if (body > static_cast<long long>(limits_.max_body_bytes)) {
      refuse(c, 413);
      return;
    }
    c.request_bytes = end + static_cast<size_t>(std::max(body, 0LL));
    c.state = Connection::State::kBody;
    c.deadline = Clock::now() + limits_.body_timeout;
    if (body < 0) c.request_bytes = end;  // chunked: the worker reads it, bounded by io_timeout per read
    if (c.buffer.size() < c.request_bytes && expects_continue(c.buffer.substr(0, end))) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";  // httplib may send its own too: 1xx may repeat
      [[maybe_unused]] const ssize_t sent = ::send(c.fd, kContinue.data(), kContinue.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    }
  }
  if (c.state == Connection::State::kBody && c.buffer.size() >= c.request_bytes) {
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    ready_.push_back(std::move(it->second));
    watched_.erase(it);
    work_ready_.notify_one();
  }
}

void ConnectionGate::sweep() {
  const auto now = Clock::now();
  for (auto it = watched_.begin(); it != watched_.end();) {
    Connection& c = *it->second;
    if (now < c.deadline) {
      ++it;
      continue;
    }
    if (c.state == Connection::State::kHeader || c.state == Connection::State::kBody) {
      refuse(c, 408);
      ++it;
      continue;
    }
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, c.fd, nullptr);
    it = watched_.erase(it);
  }
}

void ConnectionGate::watch_loop() {
  std::vector<epoll_event> events(512);
  auto last_sweep = Clock::now();
  for (;;) {
    const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), kSweepEveryMs);
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return;
    for (int i = 0; i < n; ++i) {
      const int fd = events[static_cast<size_t>(i)].data.fd;
      const auto it = watched_.find(fd);
      if (it == watched_.end()) continue;
      Connection& c = *it->second;
      const bool open = read_available(c);
      const bool hung_up = (events[static_cast<size_t>(i)].events & (EPOLLHUP | EPOLLERR)) != 0;
      if (!open || hung_up) {
        ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
        watched_.erase(it);
        continue;
      }
      if (c.state != Connection::State::kDraining) advance(it);
    }
    if (Clock::now() - last_sweep >= std::chrono::milliseconds(kSweepEveryMs)) {
      sweep();
      last_sweep = Clock::now();
    }
  }
}

void ConnectionGate::work_loop() {
  for (;;) {
    std::unique_ptr<Connection> c;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_ready_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
      if (stopping_) return;
      c = std::move(ready_.front());
      ready_.pop_front();
      ++serving_;
    }
    serve_one(std::move(c));
    std::lock_guard<std::mutex> lock(mutex_);
    --serving_;
  }
}

void ConnectionGate::serve_one(std::unique_ptr<Connection> c) {
  bool keep = false;
  try {
    ConnectionStream stream(*c, limits_.io_timeout);
    ++c->served;
    keep = serve_(stream, c->served >= limits_.max_requests_per_connection);
    stream.consume();
  } catch (const std::exception& e) {
    log::error(std::string("connection failed: ") + e.what());
    keep = false;
  }
  if (!keep) return;
  c->state = Connection::State::kIdle;
  c->request_bytes = 0;
  c->deadline = Clock::now() + limits_.idle_timeout;
  std::lock_guard<std::mutex> lock(mutex_);
  if (!stopping_) watch(std::move(c));
}

}  // namespace t2::server
