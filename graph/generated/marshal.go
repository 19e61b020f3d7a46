// Written by hand: what graph/codegen's rewrites of gqlgen's output call.
// lists.go and plain.go, generated, hold the tables these read.

package generated

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// marshalList marshals a list's elements in order when their selection asks
// for no field that may wait, and leaves them to gqlgen's goroutine per
// element otherwise (where a resolver's wait overlaps the others').
func marshalList(ctx context.Context, sel ast.SelectionSet, length int, workerLimit int64, omitPanicHandler bool,
	marshalElement func(ctx context.Context, i int) graphql.Marshaler,
) graphql.Array {
	if length < 2 || asksResolved(graphql.GetOperationContext(ctx), sel) {
		return graphql.MarshalSliceConcurrently(ctx, length, workerLimit, omitPanicHandler, marshalElement)
	}
	ret := make(graphql.Array, length)
	for i := range length {
		childCtx := graphql.WithFieldContext(ctx, &graphql.FieldContext{Index: &i})
		func() {
			if !omitPanicHandler {
				defer func() {
					if r := recover(); r != nil {
						graphql.AddError(childCtx, graphql.Recover(childCtx, r))
						ret[i] = graphql.Null
					}
				}()
			}
			ret[i] = marshalElement(childCtx, i)
		}()
	}
	return ret
}

// asksResolved says whether the selection, at any depth, asks for a field
// that may wait. A field of an interface or a union counts as one: which
// type's field runs is known only per element.
func asksResolved(oc *graphql.OperationContext, sel ast.SelectionSet) bool {
	return !everyField(oc, sel, waitsNot, nil)
}

func waitsNot(f *ast.Field) bool {
	if strings.HasPrefix(f.Name, "__") {
		return true
	}
	def := f.ObjectDefinition
	return def != nil && def.Kind == ast.Object && !resolvedFields[def.Name][f.Name]
}

// everyField says whether ok holds for every field the selection asks for,
// at any depth, through its fragments; allow, when set, must also hold for
// the directives of every field and fragment.
func everyField(oc *graphql.OperationContext, sel ast.SelectionSet, ok func(*ast.Field) bool, allow func(ast.DirectiveList) bool) bool {
	for _, s := range sel {
		switch s := s.(type) {
		case *ast.Field:
			if allow != nil && !allow(s.Directives) || !ok(s) || !everyField(oc, s.SelectionSet, ok, allow) {
				return false
			}
		case *ast.InlineFragment:
			if allow != nil && !allow(s.Directives) || !everyField(oc, s.SelectionSet, ok, allow) {
				return false
			}
		case *ast.FragmentSpread:
			def := s.Definition
			if def == nil && oc != nil && oc.Doc != nil {
				def = oc.Doc.Fragments.ForName(s.Name)
			}
			if allow != nil && !allow(s.Directives) || def == nil || !everyField(oc, def.SelectionSet, ok, allow) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// writePlain writes an object whose selection is plain at every depth
// straight to a buffer, or returns nil for gqlgen to marshal it. A value the
// schema does not allow (a null where it says non-null) also returns nil:
// gqlgen then reports it, on its path; what the attempt wrote is dropped.
func writePlain(ctx context.Context, oc *graphql.OperationContext, sel ast.SelectionSet, implementors []string,
	write func(ctx context.Context, w *plainWriter, fields []graphql.CollectedField) bool,
) graphql.Marshaler {
	if oc.Stats.GetExtension(plainWritesOff) != nil || !plainable(oc, sel) {
		return nil
	}
	w := &plainWriter{}
	if !write(ctx, w, graphql.CollectFields(oc, sel, implementors)) || w.quietCtx != nil && graphql.GetErrors(w.quietCtx) != nil {
		return nil
	}
	return w
}

// quiet is ctx with errors kept apart, for the marshal functions that may
// add one (a null where the schema says non-null): gqlgen, marshaling the
// object again, adds it to the response on its path. Made on first use: the
// common columns are written without a marshal function.
func (w *plainWriter) quiet(ctx context.Context) context.Context {
	if w.quietCtx == nil {
		w.quietCtx = graphql.WithResponseContext(ctx, keepError, nil)
	}
	return w.quietCtx
}

func keepError(_ context.Context, err error) *gqlerror.Error {
	return &gqlerror.Error{Message: err.Error()}
}

const plainWritesOff = "tally.plainWritesOff"

// WithoutPlainWrites makes every field of the operation go through gqlgen's
// executor, as a field interceptor sees only the fields that do (call it
// from an OperationContextMutator). The mark is kept in the operation's
// stats, server-side: a lookup in a map, where a context value would be a
// walk up every context the executor added.
func WithoutPlainWrites(oc *graphql.OperationContext) {
	oc.Stats.SetExtension(plainWritesOff, true)
}

// plainable says whether every field the selection asks for, at any depth,
// is plain. Only @skip and @include are allowed (CollectFields applies them);
// @defer, or any other directive, leaves the object to gqlgen.
func plainable(oc *graphql.OperationContext, sel ast.SelectionSet) bool {
	return everyField(oc, sel, isPlain, onlySkipOrInclude)
}

func isPlain(f *ast.Field) bool {
	if f.Name == "__typename" {
		return true
	}
	def := f.ObjectDefinition
	return def != nil && def.Kind == ast.Object && plainFields[def.Name][f.Name]
}

func onlySkipOrInclude(directives ast.DirectiveList) bool {
	for _, d := range directives {
		if d.Name != "skip" && d.Name != "include" {
			return false
		}
	}
	return true
}

// plainWriter is the buffer an object is written to, and the marshaler
// that writes it to the response.
type plainWriter struct {
	bytes.Buffer
	collected []collected
	quietCtx  context.Context
}

type collected struct {
	sel          ast.SelectionSet
	implementors []string
	fields       []graphql.CollectedField
}

// collect is graphql.CollectFields remembered for the write: every element
// of a list collects its children's fields from the same selection, and
// gqlgen's own cache hashes its key (an allocation) on every call.
func (w *plainWriter) collect(oc *graphql.OperationContext, sel ast.SelectionSet, implementors []string) []graphql.CollectedField {
	for _, c := range w.collected {
		if len(c.sel) == len(sel) && len(sel) > 0 && &c.sel[0] == &sel[0] && &c.implementors[0] == &implementors[0] {
			return c.fields
		}
	}
	fields := graphql.CollectFields(oc, sel, implementors)
	w.collected = append(w.collected, collected{sel, implementors, fields})
	return fields
}

func (w *plainWriter) MarshalGQL(out io.Writer) { out.Write(w.Bytes()) }

// key writes a field's name: aliases and field names are GraphQL names,
// which need no escaping.
func (w *plainWriter) key(i int, alias string) {
	if i > 0 {
		w.WriteByte(',')
	}
	w.WriteByte('"')
	w.WriteString(alias)
	w.WriteString("\":")
}

// int, bool and time write what graphql.MarshalInt64, MarshalBoolean and
// MarshalTime would (a time in RFC 3339 with nanoseconds needs no escaping),
// without their allocations. A zero time is null to gqlgen: false.
func (w *plainWriter) int(i int64) { w.Write(strconv.AppendInt(w.AvailableBuffer(), i, 10)) }

func (w *plainWriter) bool(b bool) { w.Write(strconv.AppendBool(w.AvailableBuffer(), b)) }

func (w *plainWriter) time(t time.Time) bool {
	if t.IsZero() {
		return false
	}
	w.WriteByte('"')
	w.Write(t.AppendFormat(w.AvailableBuffer(), time.RFC3339Nano))
	w.WriteByte('"')
	return true
}

// value writes what a marshal function returned; false for a null the
// schema does not allow.
func (w *plainWriter) value(m graphql.Marshaler, nonNull bool) bool {
	if m == graphql.Null {
		if nonNull {
			return false
		}
		w.WriteString("null")
		return true
	}
	m.MarshalGQL(w)
	return true
}
