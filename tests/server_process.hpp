// A real `t2 serve` process on 127.0.0.1 and an ephemeral port, for the
// integration tests: started with fork/exec, ready once it prints "t2 ready",
// stopped with SIGTERM (it drains and exits).
#pragma once

#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace t2::testing {

class ServerProcess {
 public:
  // Extra `t2 serve` arguments; --host 127.0.0.1 --port 0 are added. Throws
  // std::runtime_error with the exit status and the output when the server
  // exits (or is not ready within 60 s) before printing "t2 ready".
  explicit ServerProcess(const std::vector<std::string>& args);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  // Sends SIGTERM and waits; returns the exit status.
  int stop();
  // What the server printed so far (stdout and stderr).
  std::string output() const;

 private:
  int pid_ = -1;
  int port_ = 0;
  int out_fd_ = -1;
  mutable std::mutex mutex_;
  std::string output_;
  std::thread reader_;  // drains the pipe so the server never blocks writing logs
};

}  // namespace t2::testing
