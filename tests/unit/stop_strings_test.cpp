#include <gtest/gtest.h>

#include "t2/engine/stop_strings.hpp"

using t2::engine::StopStrings;

TEST(StopStrings, CutsBeforeTheMatchAcrossPieces) {
  StopStrings stops({"\n\n", "THE END"});
  std::string out;
  out += stops.push("Once upon").text;
  out += stops.push(" a time. TH").text;
  EXPECT_EQ(out, "Once upon a time. ");  // "TH" is held back: it may start "THE END"
  const auto r = stops.push("E EN");
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.text, "");
  const auto end = stops.push("D and more");
  EXPECT_TRUE(end.stopped);
  EXPECT_EQ(end.text, "");
}

TEST(StopStrings, ReleasesHeldTextWhenItDoesNotMatch) {
  StopStrings stops({"THE END"});
  EXPECT_EQ(stops.push("THE").text, "");
  EXPECT_EQ(stops.push(" DOG").text, "THE DOG");
  EXPECT_EQ(stops.push(" THE E").text, " ");
  EXPECT_EQ(stops.flush(), "THE E");
}

TEST(StopStrings, NoStopsPassEverythingThrough) {
  StopStrings stops({});
  EXPECT_EQ(stops.push("abc").text, "abc");
  EXPECT_FALSE(stops.push("").stopped);
}

TEST(StopStrings, EarliestMatchWins) {
  StopStrings stops({"b", "a"});
  const auto r = stops.push("xxabyy");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.text, "xx");
}
