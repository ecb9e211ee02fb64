// The run directory's checkpoint set, without MPI or HDF5: file names and their steps, the order in
// which `--restart auto` tries the checkpoints (with and without a valid `latest`), and publishing
// (rename, the `latest` pointer, keeping the newest K, leaving later steps alone).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "daa/core/error.hpp"
#include "daa/io/checkpoint.hpp"

namespace {

namespace fs = std::filesystem;
using daa::io::checkpoint_file_name;
using daa::io::checkpoint_step;
using daa::io::CheckpointCandidate;
using daa::io::publish_checkpoint;
using daa::io::restart_candidates;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

TEST(CheckpointFileName, IsZeroPaddedToEightDigits) {
  EXPECT_EQ(checkpoint_file_name(120), "step-00000120.h5");
  EXPECT_EQ(checkpoint_file_name(0), "step-00000000.h5");
  EXPECT_EQ(checkpoint_file_name(12345678), "step-12345678.h5");
  EXPECT_EQ(checkpoint_file_name(123456789), "step-123456789.h5");
}

TEST(CheckpointStep, ParsesGoodNames) {
  EXPECT_EQ(checkpoint_step("step-00000120.h5"), 120);
  EXPECT_EQ(checkpoint_step("step-00000000.h5"), 0);
  EXPECT_EQ(checkpoint_step("step-12.h5"), 12);
  EXPECT_EQ(checkpoint_step("step-123456789.h5"), 123456789);
  for (std::int64_t step : {0, 1, 99, 120, 100000000})
    EXPECT_EQ(checkpoint_step(checkpoint_file_name(step)), step);
}

TEST(CheckpointStep, RejectsBadNames) {
  for (const char* name : {"step-12.h5x", "step-.h5", "foo.h5", "step-1a.h5", "step-12.h5.tmp",
                           "step--1.h5", "step-+1.h5", "step- 1.h5", "Step-00000001.h5",
                           "step-00000001.H5", "latest", "", "step-", ".h5", "xstep-1.h5"})
    EXPECT_EQ(checkpoint_step(name), std::nullopt) << "'" << name << "'";
}

TEST(CheckpointStep, MoreDigitsThanAnInt64HoldsIsNotAStep) {
  // Not a checkpoint of ours, and no std::out_of_range from the parse either.
  EXPECT_EQ(checkpoint_step("step-99999999999999999999.h5"), std::nullopt);
  EXPECT_EQ(checkpoint_step("step-9223372036854775808.h5"), std::nullopt);
}

// A temporary directory per test, removed afterwards.
class CheckpointSet : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "daa-ckpt-set-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    if (!dir_.empty()) fs::remove_all(dir_, ignored);
  }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }
  // A stand-in checkpoint: any bytes will do.
  std::string make_checkpoint(std::int64_t step, const std::string& content = "") const {
    const std::string p = path(checkpoint_file_name(step));
    write(p, content.empty() ? "checkpoint of step " + std::to_string(step) : content);
    return p;
  }
  static void write(const std::string& p, const std::string& content) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
  }
  static std::string read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
  // Steps of the checkpoints in the directory, ascending.
  std::vector<std::int64_t> steps_on_disk() const {
    std::vector<std::int64_t> steps;
    for (const fs::directory_entry& e : fs::directory_iterator(dir_))
      if (const auto s = checkpoint_step(e.path().filename().string())) steps.push_back(*s);
    std::sort(steps.begin(), steps.end());
    return steps;
  }
  std::vector<std::int64_t> candidate_steps(std::vector<std::string>& notes) const {
    std::vector<std::int64_t> steps;
    for (const CheckpointCandidate& c : restart_candidates(dir_, notes)) {
      EXPECT_EQ(c.path, path(checkpoint_file_name(c.step)));
      steps.push_back(c.step);
    }
    return steps;
  }

  std::string dir_;
};

TEST_F(CheckpointSet, LatestComesFirstThenDescendingSteps) {
  for (std::int64_t step : {10, 20, 30}) make_checkpoint(step);
  // Neither of these is a checkpoint.
  write(path("step-00000040.h5.tmp"), "partial");
  write(path("notes.txt"), "x");
  fs::create_directory(path("step-00000050.h5"));  // a directory, not a file
  write(path("latest"), "step-00000020.h5\n");
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(20, 30, 10));
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, LatestNamingTheNewestKeepsTheDescendingOrder) {
  for (std::int64_t step : {30, 10, 20}) make_checkpoint(step);
  write(path("latest"), "step-00000030.h5\n");
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(30, 20, 10));
  EXPECT_THAT(notes, IsEmpty());
  // A `latest` without its newline works as well.
  write(path("latest"), "step-00000010.h5");
  EXPECT_THAT(candidate_steps(notes), ElementsAre(10, 30, 20));
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, WithoutLatestDescendingStepsAndANote) {
  for (std::int64_t step : {10, 20, 30}) make_checkpoint(step);
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(30, 20, 10));
  ASSERT_THAT(notes, SizeIs(1));
  EXPECT_THAT(notes[0], HasSubstr("latest"));
  EXPECT_THAT(notes[0], HasSubstr(dir_));
}

TEST_F(CheckpointSet, LatestNamingAMissingFileDescendingStepsAndANote) {
  for (std::int64_t step : {10, 20, 30}) make_checkpoint(step);
  write(path("latest"), "step-00000040.h5\n");
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(30, 20, 10));
  ASSERT_THAT(notes, SizeIs(1));
  EXPECT_THAT(notes[0], HasSubstr("step-00000040.h5"));
  EXPECT_THAT(notes[0], HasSubstr("not there"));
}

TEST_F(CheckpointSet, AStrayFileWithAHugeStepIsIgnored) {
  for (std::int64_t step : {10, 20}) make_checkpoint(step);
  write(path("step-99999999999999999999.h5"), "not ours");
  write(path("latest"), "step-00000020.h5\n");
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(20, 10));
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, AnEmptyDirectoryHasNoCandidatesAndNoNote) {
  std::vector<std::string> notes;
  EXPECT_THAT(restart_candidates(dir_, notes), IsEmpty());
  EXPECT_THAT(notes, IsEmpty());
  // A directory that does not exist has none either.
  EXPECT_THAT(restart_candidates(path("nowhere"), notes), IsEmpty());
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, PublishRenamesPointsLatestAndKeepsTheNewest) {
  std::vector<std::string> contents;
  for (std::int64_t step : {10, 20, 30}) {
    const std::string temp = path(checkpoint_file_name(step) + ".tmp");
    const std::string content = "data of step " + std::to_string(step);
    write(temp, content);
    const std::string final_path = path(checkpoint_file_name(step));
    publish_checkpoint(dir_, temp, final_path, step, 2);
    EXPECT_FALSE(fs::exists(temp));
    EXPECT_EQ(read(final_path), content);
    EXPECT_EQ(read(path("latest")), checkpoint_file_name(step) + "\n");
    EXPECT_FALSE(fs::exists(path("latest.tmp")));
  }
  EXPECT_THAT(steps_on_disk(), ElementsAre(20, 30));
  EXPECT_EQ(read(path(checkpoint_file_name(20))), "data of step 20");
  EXPECT_EQ(read(path(checkpoint_file_name(30))), "data of step 30");
  // What the restart would try.
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(30, 20));
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, PublishLeavesLaterStepsAlone) {
  // An abandoned continuation left step 50 behind; the run restarted from 20 and now saves 30.
  make_checkpoint(10);
  make_checkpoint(20);
  make_checkpoint(50);
  write(path("step-00000030.h5.tmp"), "step 30");
  publish_checkpoint(dir_, path("step-00000030.h5.tmp"), path("step-00000030.h5"), 30, 2);
  // 50 is not counted among the kept two (30, 20) and not deleted; 10 is.
  EXPECT_THAT(steps_on_disk(), ElementsAre(20, 30, 50));
  EXPECT_EQ(read(path("latest")), "step-00000030.h5\n");
  // With keep = 1 on the next save, 50 still survives.
  write(path("step-00000040.h5.tmp"), "step 40");
  publish_checkpoint(dir_, path("step-00000040.h5.tmp"), path("step-00000040.h5"), 40, 1);
  EXPECT_THAT(steps_on_disk(), ElementsAre(40, 50));
  std::vector<std::string> notes;
  EXPECT_THAT(candidate_steps(notes), ElementsAre(40, 50));
  EXPECT_THAT(notes, IsEmpty());
}

TEST_F(CheckpointSet, KeepZeroKeepsAll) {
  for (std::int64_t step : {10, 20, 30, 40}) {
    const std::string temp = path("partial.h5.tmp");
    write(temp, std::to_string(step));
    publish_checkpoint(dir_, temp, path(checkpoint_file_name(step)), step, 0);
  }
  EXPECT_THAT(steps_on_disk(), ElementsAre(10, 20, 30, 40));
  EXPECT_EQ(read(path("latest")), "step-00000040.h5\n");
}

TEST_F(CheckpointSet, KeepOneLeavesOnlyThePublishedOne) {
  make_checkpoint(10);
  make_checkpoint(20);
  write(path("t"), "30");
  publish_checkpoint(dir_, path("t"), path(checkpoint_file_name(30)), 30, 1);
  EXPECT_THAT(steps_on_disk(), ElementsAre(30));
  // Other files are never touched.
  write(path("notes.txt"), "x");
  write(path("t"), "40");
  publish_checkpoint(dir_, path("t"), path(checkpoint_file_name(40)), 40, 1);
  EXPECT_THAT(steps_on_disk(), ElementsAre(40));
  EXPECT_TRUE(fs::exists(path("notes.txt")));
}

TEST_F(CheckpointSet, PublishingAMissingTemporaryFileFailsNamingIt) {
  make_checkpoint(10);
  write(path("latest"), "step-00000010.h5\n");
  const std::string temp = path("missing.h5.tmp");
  try {
    publish_checkpoint(dir_, temp, path(checkpoint_file_name(20)), 20, 1);
    ADD_FAILURE() << "no exception";
  } catch (const daa::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(temp));
  }
  // Nothing changed: the old checkpoint and pointer are intact.
  EXPECT_THAT(steps_on_disk(), ElementsAre(10));
  EXPECT_EQ(read(path("latest")), "step-00000010.h5\n");
}

}  // namespace
