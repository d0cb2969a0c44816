// Encode throughput of t2's tokenizer on one thread: each line of a corpus file
// through Tokenizer::encode, timed over several passes; prints JSON.
//   t2_tokenizer_bench TOKENIZER_JSON_OR_FOLDER CORPUS_FILE [PASSES]
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "t2/tokenizer/tokenizer.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: t2_tokenizer_bench TOKENIZER CORPUS [PASSES]\n";
    return 2;
  }
  const auto tok = t2::tokenizer::Tokenizer::load(argv[1]);
  std::ifstream in(argv[2]);
  std::vector<std::string> lines;
  size_t bytes = 0;
  for (std::string line; std::getline(in, line);) {
    bytes += line.size();
    lines.push_back(std::move(line));
  }
  const int passes = argc > 3 ? std::stoi(argv[3]) : 3;
  double best = 1e300;
  size_t tokens = 0;
  for (int p = 0; p < passes; ++p) {
    tokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const auto& line : lines) tokens += tok.encode(line, false).size();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::cout << nlohmann::json{{"impl", "t2"}, {"bytes", bytes}, {"tokens", tokens}, {"seconds", best},
                              {"mb_per_s", static_cast<double>(bytes) / best / 1e6}}
                   .dump()
            << "\n";
  return 0;
}
