package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	entsql "entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// LedgerCheck is one run of the ledger's invariant checks, done by a
// background job in chunks: a full run walks every user, transaction and
// payment; an incremental run checks what changed since the previous one.
// The row is the run's durable state: where it got to (so that a run
// interrupted by a crash resumes there), what it counted and found, and,
// once finished, its result, which ledgerReport shows without checking
// anything itself.
type LedgerCheck struct{ ent.Schema }

func (LedgerCheck) Mixin() []ent.Mixin {
	return []ent.Mixin{withID("lck"), createdMixin{}}
}

func (LedgerCheck) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("kind").Values("FULL", "INCREMENTAL").Immutable(),
		field.Enum("status").Values("QUEUED", "RUNNING", "DONE", "FAILED").Default("QUEUED"),
		field.String("live").MaxLen(16).Optional().Nillable().
			Comment("the kind while the run is queued or running, NULL once it has finished"),
		field.String("requested_by").MaxLen(300).Optional().Immutable().
			Comment("the admin who started it; empty for scheduled runs"),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
		field.Time("updated_at").Optional().Nillable().
			Comment("when the run last recorded progress"),
		field.String("phase").MaxLen(32).Optional().
			Comment("the kind of subject being walked: users, transactions, payments"),
		field.String("cursor").MaxLen(64).Optional().
			Comment("the last subject of the phase checked; a resumed run continues after it"),
		field.Int64("checked").Default(0).Comment("subjects checked so far, every phase"),
		field.Int64("total").Default(0).Comment("subjects to check, estimated when the run started"),
		field.Int64("users").Default(0),
		field.Int64("transactions").Default(0),
		field.Int64("payments").Default(0),
		field.Int64("postings").Default(0),
		field.Int64("lots").Default(0),
		field.Int64("problem_count").Default(0),
		field.JSON("problems", []CheckProblem{}).Optional().
			Comment("the first problems found, at most a hundred"),
		field.String("from_id").MaxLen(64).Optional().
			Comment("incremental runs: transactions after this id were checked"),
		field.String("through_id").MaxLen(64).Optional().
			Comment("incremental runs: up to this id; full runs: the last transaction when it started"),
		field.String("error").MaxLen(1000).Optional(),
	}
}

// CheckProblem is one broken invariant as a check run stores it.
type CheckProblem struct {
	Invariant string `json:"invariant"`
	Subject   string `json:"subject"`
	Detail    string `json:"detail"`
}

func (LedgerCheck) Indexes() []ent.Index {
	return []ent.Index{
		// ledgerReport reads the latest run of each kind, and the runs that
		// found problems since the latest full one.
		index.Fields("kind", "created_at"),
		index.Fields("kind", "created_at").StorageKey("ledgercheck_findings").
			Annotations(entsql.IndexWhere("problem_count > 0")),
		// One run of each kind at a time, whatever the number of admins
		// and replicas starting one (NULLs, the finished runs, are
		// distinct to both databases).
		index.Fields("live").Unique(),
	}
}

func (LedgerCheck) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
