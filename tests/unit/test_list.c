/* test_list.c - bridge/lib/list.h: the intrusive list every in-flight set uses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "bridge/lib/list.h"

struct item {
    int v;
    struct list_node link;
};

static int values(struct list_node *head, int *out, int max) {
    int n = 0;
    list_for_each(it, head) {
        if (n < max)
            out[n] = list_entry(it, struct item, link)->v;
        n++;
    }
    return n;
}

static void test_order_and_remove(void **state) {
    (void)state;
    struct list_node head;
    list_init(&head);
    assert_true(list_empty(&head));
    assert_null(list_first(&head));
    struct item a = {1, {0}}, b = {2, {0}}, c = {3, {0}};
    list_push_back(&head, &b.link);
    list_push_back(&head, &c.link);
    list_push_front(&head, &a.link);
    int got[4];
    assert_int_equal(values(&head, got, 4), 3);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 2);
    assert_int_equal(got[2], 3);
    assert_ptr_equal(list_entry(list_first(&head), struct item, link), &a);

    list_remove(&b.link);
    assert_false(list_linked(&b.link));
    list_remove(&b.link); /* twice: a no-op */
    assert_int_equal(values(&head, got, 4), 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 3);
    assert_true(list_linked(&a.link));
}

static void test_remove_while_walking(void **state) {
    (void)state;
    struct list_node head;
    list_init(&head);
    struct item items[5];
    for (int i = 0; i < 5; i++) {
        items[i].v = i;
        list_push_back(&head, &items[i].link);
    }
    list_for_each_safe(n, nx, &head) {
        if (list_entry(n, struct item, link)->v % 2 == 0)
            list_remove(n);
    }
    int got[5];
    assert_int_equal(values(&head, got, 5), 2);
    assert_int_equal(got[0], 1);
    assert_int_equal(got[1], 3);
    list_for_each_safe(n, nx, &head) list_remove(n);
    assert_true(list_empty(&head));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_remove),
        cmocka_unit_test(test_remove_while_walking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
