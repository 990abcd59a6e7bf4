// Copyright dmareg authors. SPDX-License-Identifier: Apache-2.0
#include "vfio/fd_sharing/fd_message.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace dmareg::internal {
namespace {

using ::testing::HasSubstr;

VfioFdRequestBytes GroupRequest(int32_t group) {
  return *EncodeRequest({VfioFdRequestType::kGroup, group});
}

TEST(VfioFdMessageTest, RequestsRoundTrip) {
  for (VfioFdRequest r : {VfioFdRequest{VfioFdRequestType::kContainer, 0},
                          VfioFdRequest{VfioFdRequestType::kIommuType, 0},
                          VfioFdRequest{VfioFdRequestType::kGroup, 0},
                          VfioFdRequest{VfioFdRequestType::kGroup, 0x7fffffff}}) {
    absl::StatusOr<VfioFdRequestBytes> bytes = EncodeRequest(r);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<VfioFdRequest> back = ParseRequest(*bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->type, r.type);
    EXPECT_EQ(back->group, r.group);
  }
}

TEST(VfioFdMessageTest, RequestIsLittleEndian) {
  const VfioFdRequestBytes b = GroupRequest(0x01020304);
  const std::vector<uint8_t> expected = {'D', 'R', 'V', 'F', 1, 0, 0x00, 0x02,
                                         4,   3,   2,   1,   0, 0, 0,    0};
  EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()), expected);
}

TEST(VfioFdMessageTest, EncodeRefusesWhatCannotBeParsed) {
  EXPECT_THAT(EncodeRequest({VfioFdRequestType::kGroup, -1}).status().message(),
              HasSubstr("negative group -1"));
  EXPECT_EQ(EncodeRequest({static_cast<VfioFdRequestType>(0x300), 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(EncodeRequest({VfioFdRequestType::kContainer, 5}).status().message(),
              HasSubstr("container request carries group 5"));
  EXPECT_EQ(EncodeReply({0, VfioFdResult::kOk, 0, ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeReply({0x100, static_cast<VfioFdResult>(7), 0, ""}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VfioFdMessageTest, ParseRequestRejectsEachBadField) {
  const VfioFdRequestBytes good = GroupRequest(3);
  struct Case {
    size_t offset;
    uint8_t value;
    const char* says;
  };
  for (const Case& c :
       {Case{0, 'X', "magic"}, Case{4, 2, "version 2"}, Case{6, 0x01, "unknown type 0x201"},
        Case{11, 0x80, "negative group"}, Case{12, 1, "reserved bits"}}) {
    VfioFdRequestBytes bad = good;
    bad[c.offset] = c.value;
    absl::StatusOr<VfioFdRequest> r = ParseRequest(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(r.status().message(), HasSubstr(c.says));
  }
}

TEST(VfioFdMessageTest, ParseRequestRejectsWrongSizes) {
  const VfioFdRequestBytes good = GroupRequest(3);
  EXPECT_THAT(ParseRequest({}).status().message(), HasSubstr("0 bytes, expected 16"));
  EXPECT_THAT(ParseRequest(std::span(good).first(15)).status().message(), HasSubstr("15 bytes"));
  std::vector<uint8_t> longer(good.begin(), good.end());
  longer.push_back(0);
  EXPECT_THAT(ParseRequest(longer).status().message(), HasSubstr("17 bytes"));
}

TEST(VfioFdMessageTest, RepliesRoundTrip) {
  for (VfioFdReply r :
       {VfioFdReply{0x100, VfioFdResult::kOk, 0, ""}, VfioFdReply{0x400, VfioFdResult::kOk, 3, ""},
        VfioFdReply{0x200, VfioFdResult::kNoFd, 7, "group 7 is not bound"},
        VfioFdReply{0, VfioFdResult::kErr, 7, "peer uid 1 is not allowed"}}) {
    absl::StatusOr<VfioFdReplyBytes> bytes = EncodeReply(r);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    absl::StatusOr<VfioFdReply> back = ParseReply(*bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->request_type, r.request_type);
    EXPECT_EQ(back->result, r.result);
    EXPECT_EQ(back->value, r.value);
    EXPECT_EQ(back->reason, r.reason);
  }
}

TEST(VfioFdMessageTest, LongReasonIsCut) {
  absl::StatusOr<VfioFdReplyBytes> bytes =
      EncodeReply({0x100, VfioFdResult::kErr, 13, std::string(500, 'x')});
  ASSERT_TRUE(bytes.ok());
  absl::StatusOr<VfioFdReply> back = ParseReply(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->reason, std::string(kVfioFdMaxReason, 'x'));
}

TEST(VfioFdMessageTest, ParseReplyRejectsEachBadField) {
  const VfioFdReplyBytes good = *EncodeReply({0x200, VfioFdResult::kNoFd, 4, "why"});
  struct Case {
    size_t offset;
    uint8_t value;
    const char* says;
  };
  for (const Case& c :
       {Case{3, 0, "magic"}, Case{5, 1, "version 257"}, Case{7, 0x08, "unknown request type 0x800"},
        Case{6, 0x01, "0x201"}, Case{8, 3, "unknown result 3"}, Case{10, 201, "201-byte reason"},
        Case{100, 'y', "bytes after its reason"}}) {
    VfioFdReplyBytes bad = good;
    bad[c.offset] = c.value;
    absl::StatusOr<VfioFdReply> r = ParseReply(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.says;
    EXPECT_THAT(r.status().message(), HasSubstr(c.says));
  }
  // Type 0 ("request not read") only goes with ERR.
  VfioFdReplyBytes no_type = good;
  no_type[7] = 0;
  EXPECT_EQ(ParseReply(no_type).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseReply(std::span(good).first(16)).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dmareg::internal
