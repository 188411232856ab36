// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ThresholdRecord
/// @notice Write-once store of consensus values, one per transaction id (R11, last line of defence).
/// @dev The off-chain submitter guarantees exactly-once submission; this contract makes a second
///      successful write for the same txId impossible whatever the submitter does. Each record
///      carries the hash of the consensus certificate (the t signed votes, canonically encoded) so an
///      auditor can check the on-chain value against the signed votes in the event log.
contract ThresholdRecord {
    struct Record {
        uint64 value;
        uint64 blockNumber; // 0 means "no record": a record is never written in block 0
        bytes32 certificateHash;
    }

    /// @notice Account that may authorise and deauthorise submitters.
    address public owner;

    /// @notice Accounts allowed to call `record`.
    mapping(address => bool) public isSubmitter;

    /// @notice Number of records written so far.
    uint256 public recordCount;

    mapping(bytes32 => Record) private _records;

    event Recorded(
        bytes32 indexed txIdHash, string txId, uint64 value, bytes32 certificateHash, address submitter
    );
    event SubmitterSet(address indexed submitter, bool authorised);

    error NotOwner(address caller);
    error NotSubmitter(address caller);
    error InvalidTxId(string txId);
    error AlreadyRecorded(string txId, uint64 value, bytes32 certificateHash);

    constructor(address[] memory submitters) {
        owner = msg.sender;
        for (uint256 i = 0; i < submitters.length; i++) {
            isSubmitter[submitters[i]] = true;
            emit SubmitterSet(submitters[i], true);
        }
    }

    /// @notice Authorise (true) or deauthorise (false) a submitter account.
    function setSubmitter(address submitter, bool authorised) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        isSubmitter[submitter] = authorised;
        emit SubmitterSet(submitter, authorised);
    }

    /// @notice Record the consensus value for txId; reverts if txId already has a record.
    function record(string calldata txId, uint64 value, bytes32 certificateHash) external {
        if (!isSubmitter[msg.sender]) revert NotSubmitter(msg.sender);
        if (!_validTxId(bytes(txId))) revert InvalidTxId(txId);
        bytes32 key = keccak256(bytes(txId));
        Record storage existing = _records[key];
        if (existing.blockNumber != 0) {
            revert AlreadyRecorded(txId, existing.value, existing.certificateHash);
        }
        _records[key] = Record(value, uint64(block.number), certificateHash);
        recordCount += 1;
        emit Recorded(key, txId, value, certificateHash, msg.sender);
    }

    /// @notice The record for txId, if any (blockNumber is the block that wrote it).
    function recordOf(string calldata txId)
        external
        view
        returns (bool exists, uint64 value, bytes32 certificateHash, uint256 blockNumber)
    {
        Record storage r = _records[keccak256(bytes(txId))];
        return (r.blockNumber != 0, r.value, r.certificateHash, r.blockNumber);
    }

    /// @dev R2: 1..128 characters of [A-Za-z0-9_.:-].
    function _validTxId(bytes calldata id) private pure returns (bool) {
        if (id.length == 0 || id.length > 128) return false;
        for (uint256 i = 0; i < id.length; i++) {
            bytes1 c = id[i];
            bool ok = (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9")
                || c == "_" || c == "." || c == ":" || c == "-";
            if (!ok) return false;
        }
        return true;
    }
}
