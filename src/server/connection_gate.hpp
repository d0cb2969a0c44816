// ConnectionGate: every client connection of the HTTP server, and the worker
// threads that serve them. One epoll thread watches a connection while its
// request arrives (the header, then a Content-Length body) and while it idles
// between keep-alive requests; only a complete request takes a worker. So a
// slow-drip or idle client costs a socket and a bounded buffer, never a
// worker: /health stays answerable with thousands of such clients open.
// Over-long headers get 431, bodies over the limit 413, a request that does
// not arrive in time 408; their buffers are freed with the connection.
// Owns: the epoll thread, the worker pool, the sockets and their buffers.
#pragma once

#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace t2::server {

struct GateLimits {
  size_t max_header_bytes = 32 * 1024;
  size_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds header_timeout{10000};  // from a request's first byte to its last header line
  std::chrono::milliseconds body_timeout{30000};    // from the header to the end of a Content-Length body
  std::chrono::milliseconds idle_timeout{5000};     // keep-alive: between requests
  std::chrono::milliseconds io_timeout{5000};       // one read or write of a worker
  size_t max_requests_per_connection = 100;
  size_t max_connections = 16384;
  size_t workers = 8;
};

// One client socket and the bytes read from it but not yet consumed.
struct Connection {
  explicit Connection(int fd);
  ~Connection();  // shuts the socket down and closes it
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  enum class State { kIdle, kHeader, kBody, kDraining };
  int fd;
  std::string buffer;
  size_t request_bytes = 0;  // kBody: header + body length of the buffered request
  size_t served = 0;         // requests answered on this connection
  State state = State::kIdle;
  std::chrono::steady_clock::time_point deadline;
};

// httplib's view of a connection while a worker serves it: the buffered bytes
// first, then the (non-blocking) socket, each wait bounded by io_timeout.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(Connection& connection, std::chrono::milliseconds io_timeout);
  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return connection_.fd; }
  // Drops the bytes read so far from the connection's buffer (what remains is a pipelined request).
  void consume();

 private:
  Connection& connection_;
  std::chrono::milliseconds io_timeout_;
  size_t position_ = 0;
};

// Whether the peer of a connection being served is still there (false once it closed or reset).
bool peer_connected(int fd);

class ConnectionGate {
 public:
  // Serves one complete request; returns whether the connection stays open.
  using Serve = std::function<bool(ConnectionStream& stream, bool last_request)>;
  // The whole HTTP response refusing a request with `status` (408, 413, 431).
  using Refusal = std::function<std::string(int status)>;

  ConnectionGate(GateLimits limits, Serve serve, Refusal refusal);
  ~ConnectionGate();
  ConnectionGate(const ConnectionGate&) = delete;
  ConnectionGate& operator=(const ConnectionGate&) = delete;

  // Takes a freshly accepted socket (closed at once when max_connections are open).
  void adopt(int fd);
  // Closes the waiting connections, lets the workers finish their requests, joins every thread.
  void shutdown();

 private:
  void watch_loop();
  void work_loop();
  // Reads what `c` has to give; returns false when the connection is finished.
  bool read_available(Connection& c);
  // Moves a connection on when its buffer holds a whole request or breaks a limit (lock held).
  void advance(std::map<int, std::unique_ptr<Connection>>::iterator it);
  void refuse(Connection& c, int status);
  void serve_one(std::unique_ptr<Connection> c);
  void watch(std::unique_ptr<Connection> c);  // (lock held)
  void sweep();                                // closes what is past its deadline (lock held)

  const GateLimits limits_;
  const Serve serve_;
  const Refusal refusal_;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that ends epoll_wait on shutdown

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::map<int, std::unique_ptr<Connection>> watched_;  // by fd
  std::deque<std::unique_ptr<Connection>> ready_;       // whole requests waiting for a worker
  size_t serving_ = 0;                                  // connections a worker holds
  bool stopping_ = false;
  std::thread watcher_;
  std::vector<std::thread> workers_;
};

}  // namespace t2::server
