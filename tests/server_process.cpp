#include "server_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <stdexcept>

#include "support.hpp"

namespace t2::testing {

ServerProcess::ServerProcess(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::vector<std::string> argv = {t2_binary().string(), "serve", "--host", "127.0.0.1", "--port", "0"};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    execv(cargv[0], cargv.data());
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];
  // Read until the ready line; fail if the process exits or 60 s pass. A
  // server that fails to start is reaped here (the destructor will not run),
  // and its exit status is part of the error.
  const auto fail = [this](const std::string& what, bool still_running) {
    if (still_running) kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    close(out_fd_);
    out_fd_ = -1;
    const std::string code = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status)) : "killed";
    throw std::runtime_error(what + " (" + code + "):\n" + output_);
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+))");
  while (output_.find("t2 ready") == std::string::npos) {
    pollfd p{out_fd_, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) fail("server did not start", true);
    char buffer[4096];
    const ssize_t n = read(out_fd_, buffer, sizeof buffer);
    if (n <= 0) fail("server exited", false);
    output_.append(buffer, static_cast<size_t>(n));
  }
  std::smatch m;
  if (!std::regex_search(output_, m, listening)) fail("no port in the output", true);
  port_ = std::stoi(m[1]);
  reader_ = std::thread([this] {
    char buffer[4096];
    for (ssize_t n; (n = read(out_fd_, buffer, sizeof buffer)) > 0;) {
      std::lock_guard<std::mutex> lock(mutex_);
      output_.append(buffer, static_cast<size_t>(n));
    }
  });
}

std::string ServerProcess::output() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return output_;
}

int ServerProcess::stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  waitpid(pid_, &status, 0);
  if (reader_.joinable()) reader_.join();  // ends at EOF, once the server has exited
  close(out_fd_);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ServerProcess::~ServerProcess() { stop(); }

}  // namespace t2::testing
