package watcher

// The stages of a drop file that a build with -tags mxdrop_stages notes (stages_on.go);
// in any other build stage, stagePath and writeStages do nothing (stages_off.go). The
// order is the stage file's column order, which mxdrop-bench -stages reads.
const (
	stageRead    = iota // its event was read (by the inotify reader or the event loop)
	stageWorker         // a worker began its job
	stageClaimed        // claimed
	stageVisible        // its copies are in place in the Maildirs
	stageSynced         // its copies are durable
	stageCount
)
