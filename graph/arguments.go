package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"entgo.io/contrib/entgql"
	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/tally-billing/tally/internal/apperr"
)

// Bounds of argument values, checked before anything runs.
const (
	// MaxListItems bounds every list argument (ids, filters' in and or,
	// lot ids, metadata), so that no value makes a query of unbounded size.
	MaxListItems = 100
	// MaxFilterTerms bounds the values of one where filter, however nested.
	MaxFilterTerms = 100
	// maxIDLength bounds an ID argument (Tally's ids are about 30 bytes).
	maxIDLength = 255
)

// argumentCheck holds every argument of an operation, literal or from a
// variable, to the schema's types exactly and to the server's bounds, before
// the complexity is computed and before any resolver runs:
//
//   - types as the GraphQL specification defines them: gqlparser lets a
//     string through where an Int or Float is expected and matches enum
//     values without regard to case, and it leaves custom scalars (Time,
//     Cursor) to execution, where a malformed one surfaced as INTERNAL;
//   - no NUL or other control character in a string (tab, newline and
//     carriage return excepted) or an ID: PostgreSQL refuses NUL and SQLite
//     stores it, and neither belongs in a reason, a name or a key;
//   - lists of at most MaxListItems, filters of at most MaxFilterTerms
//     values.
//
// A value of the wrong type is GRAPHQL_VALIDATION_FAILED, like gqlparser's
// own coercion errors; a time or cursor that does not parse, or a value past
// a bound, is INVALID_ARGUMENT. Both name the argument in extensions.field.
type argumentCheck struct{ schema *ast.Schema }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = &argumentCheck{}

func (*argumentCheck) ExtensionName() string { return "ArgumentCheck" }

func (a *argumentCheck) Validate(es graphql.ExecutableSchema) error {
	a.schema = es.Schema()
	return nil
}

func (a *argumentCheck) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	w := argWalker{schema: a.schema, vars: oc.Variables, doc: oc.Doc, seen: map[string]bool{}}
	w.selections(oc.Operation.SelectionSet)
	return w.err
}

type argWalker struct {
	schema *ast.Schema
	vars   map[string]any
	doc    *ast.QueryDocument
	seen   map[string]bool // fragments already walked
	err    *gqlerror.Error
}

func (w *argWalker) selections(set ast.SelectionSet) {
	for _, sel := range set {
		if w.err != nil {
			return
		}
		switch s := sel.(type) {
		case *ast.Field:
			w.directives(s.Directives)
			if s.Definition != nil {
				for _, arg := range s.Arguments {
					if def := s.Definition.Arguments.ForName(arg.Name); def != nil {
						w.argument(arg, def.Type)
					}
				}
			}
			w.selections(s.SelectionSet)
		case *ast.InlineFragment:
			w.directives(s.Directives)
			w.selections(s.SelectionSet)
		case *ast.FragmentSpread:
			w.directives(s.Directives)
			if !w.seen[s.Name] {
				w.seen[s.Name] = true
				if f := w.doc.Fragments.ForName(s.Name); f != nil {
					w.selections(f.SelectionSet)
				}
			}
		}
	}
}

func (w *argWalker) directives(list ast.DirectiveList) {
	for _, d := range list {
		if d.Definition == nil {
			continue
		}
		for _, arg := range d.Arguments {
			if def := d.Definition.Arguments.ForName(arg.Name); def != nil {
				w.argument(arg, def.Type)
			}
		}
	}
}

func (w *argWalker) argument(arg *ast.Argument, typ *ast.Type) {
	if w.err != nil {
		return
	}
	v, err := arg.Value.Value(w.vars)
	if err != nil {
		w.err = coercionError(arg.Name, "is not a valid value")
		return
	}
	if w.err = checkValue(w.schema, arg.Name, v, typ); w.err != nil {
		return
	}
	if strings.HasSuffix(typ.NamedType, "WhereInput") {
		if n := filterTerms(v); n > MaxFilterTerms {
			w.err = fieldLimitError(arg.Name, "filterTerms", MaxFilterTerms, "the filter holds %d values; the limit is %d", n, MaxFilterTerms)
		}
	}
}

// checkValue holds v to typ and to the bounds; path names it for the client.
func checkValue(schema *ast.Schema, path string, v any, typ *ast.Type) *gqlerror.Error {
	if v == nil {
		return nil // nullability is gqlparser's, and it checked it
	}
	if typ.Elem != nil {
		items, ok := v.([]any)
		if !ok { // a single value stands for a list of one
			return checkValue(schema, path, v, typ.Elem)
		}
		if len(items) > MaxListItems {
			return fieldLimitError(path, "listItems", MaxListItems, "%s holds %d items; the limit is %d", path, len(items), MaxListItems)
		}
		for i, item := range items {
			if err := checkValue(schema, path+"."+strconv.Itoa(i), item, typ.Elem); err != nil {
				return err
			}
		}
		return nil
	}
	def := schema.Types[typ.NamedType]
	if def == nil {
		return nil
	}
	switch def.Kind {
	case ast.InputObject:
		fields, ok := v.(map[string]any)
		if !ok {
			return coercionError(path, "must be an input object of type "+def.Name)
		}
		for name, f := range fields {
			fd := def.Fields.ForName(name)
			if fd == nil {
				continue // gqlparser refused unknown fields already
			}
			if err := checkValue(schema, path+"."+name, f, fd.Type); err != nil {
				return err
			}
		}
		return nil
	case ast.Enum:
		s, ok := v.(string)
		if !ok || def.EnumValues.ForName(s) == nil {
			return coercionError(path, "must be one of the values of "+def.Name)
		}
		return nil
	}
	return scalarCheck(path, v, def.Name)
}

// scalarCheck holds a value to its scalar type exactly.
func scalarCheck(path string, v any, scalar string) *gqlerror.Error {
	switch scalar {
	case "Int":
		switch n := v.(type) {
		case int64, int, int32:
			return nil
		case json.Number:
			if _, err := n.Int64(); err == nil {
				return nil
			}
		case float64: // from a client that decoded without UseNumber
			if n == math.Trunc(n) && math.Abs(n) <= 1<<53 {
				return nil
			}
		}
		return coercionError(path, "must be an Int, not "+describe(v))
	case "Float":
		switch n := v.(type) {
		case float64, int64, int:
			return nil
		case json.Number:
			if _, err := n.Float64(); err == nil {
				return nil
			}
		}
		return coercionError(path, "must be a Float, not "+describe(v))
	case "Boolean":
		if _, ok := v.(bool); !ok {
			return coercionError(path, "must be a Boolean, not "+describe(v))
		}
		return nil
	case "String":
		s, ok := v.(string)
		if !ok {
			return coercionError(path, "must be a String, not "+describe(v))
		}
		return textCheck(path, s, true)
	case "ID":
		switch s := v.(type) {
		case string:
			if len(s) > maxIDLength {
				return fieldLimitError(path, "idBytes", maxIDLength, "%s is longer than %d bytes", path, maxIDLength)
			}
			return textCheck(path, s, false)
		case int64, int, json.Number:
			return nil
		}
		return coercionError(path, "must be an ID, not "+describe(v))
	case "Time":
		s, ok := v.(string)
		if !ok {
			return coercionError(path, "must be a time, not "+describe(v))
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return fieldError(path, apperr.InvalidArgument, path+" must be a time in RFC 3339 form, such as 2026-12-31T23:59:59Z")
		}
		return nil
	case "Cursor":
		var cursor entgql.Cursor[string]
		if err := cursor.UnmarshalGQL(v); err != nil {
			return fieldError(path, apperr.InvalidArgument, path+" is not a cursor this server gave out")
		}
		return nil
	}
	return nil
}

// textCheck refuses invalid UTF-8, NUL and control characters; free text
// may hold tabs and line breaks.
func textCheck(path, s string, freeText bool) *gqlerror.Error {
	if !utf8.ValidString(s) {
		return fieldError(path, apperr.InvalidArgument, path+" is not valid UTF-8")
	}
	bad := strings.IndexFunc(s, func(r rune) bool {
		if freeText && (r == '\t' || r == '\n' || r == '\r') {
			return false
		}
		return unicode.IsControl(r)
	})
	if bad >= 0 {
		return fieldError(path, apperr.InvalidArgument, fmt.Sprintf("%s holds a control character (%U) at byte %d", path, []rune(s[bad:])[0], bad))
	}
	return nil
}

func describe(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case bool:
		return "a Boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case json.Number, int64, int, float64:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

func coercionError(path, problem string) *gqlerror.Error {
	return fieldError(path, errcode.ValidationFailed, path+" "+problem)
}

func fieldError[C ~string](path string, code C, message string) *gqlerror.Error {
	return &gqlerror.Error{Message: message, Extensions: map[string]any{"code": string(code), "field": path}}
}

func fieldLimitError(path, limit string, max int, format string, args ...any) *gqlerror.Error {
	err := limitError(limit, max, format, args...)
	err.Extensions["field"] = path
	return err
}
