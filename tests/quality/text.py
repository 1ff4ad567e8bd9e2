"""What the test pages say: English and Chinese prose, receipt rows and names, drawn from seeded pools
so that every run writes the same words."""

from __future__ import annotations

import random

# Common words of office prose; real text, not a list chosen to be easy to read.
ENGLISH = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she all their there been one would will more if no when what so said "
    "about out up them into has time only some could new these two may first then do any like other "
    "over also after made well did back years where much your way down should because each just those "
    "people how too little state good very make world still own see men work long get here between both "
    "life being under never day same another know while last might us great old year off come since "
    "against go came right used take three himself few house use during without again place around "
    "however home small found thought went say part once general high upon school every does got united "
    "left number course war until always away something fact though water less public put think almost "
    "hand enough far took head yet government system better set told nothing night end why called "
    "meeting report budget review project deadline customer invoice team office quarter market order"
).split()

# Two-character words of everyday written Chinese, so lines read like text rather than noise.
CHINESE = (
    "我们 今天 会议 项目 进度 客户 需求 设计 方案 时间 安排 下午 上午 明天 已经 完成 部分 问题 "
    "需要 确认 讨论 结果 负责 同事 报告 数据 分析 市场 产品 团队 计划 目标 预算 费用 合同 文件 "
    "通知 公司 部门 经理 工作 学习 生活 城市 天气 春天 秋天 山水 花园 道路 学校 老师 学生 朋友 "
    "家人 电话 邮件 地址 系统 服务 用户 支持 发布 版本 测试 修改 更新 提交 审核 流程 规定 重要 "
    "简单 清楚 认真 及时 继续 开始 结束 准备 参加 提供 解决 考虑 情况 方面 条件 环境 发展 建设"
).split()

ITEMS_ZH = (
    "拿铁咖啡", "美式咖啡", "抹茶蛋糕", "牛肉面", "鸡蛋饼", "矿泉水", "酸奶", "三明治", "水果沙拉",
    "红烧肉", "宫保鸡丁", "米饭", "绿茶", "豆浆", "小笼包", "炒青菜", "番茄蛋汤", "可乐",
)
ITEMS_EN = (
    "Latte large", "Americano", "Green tea", "Bagel with cream", "Orange juice", "Club sandwich",
    "Caesar salad", "Tomato soup", "Chocolate muffin", "Sparkling water", "Fruit cup", "Espresso",
    "Blueberry scone", "Chicken wrap", "Iced mocha", "Banana bread",
)

SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何林"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚"
HANDLES = ("lina", "zhangwei", "chen_yu", "mike.wu", "sophia", "devops-bot", "liu.fang", "alex2024")


def english_line(rng: random.Random, length: int) -> str:
    """A sentence-like line of about `length` characters: capitalised, commas now and then, a full stop."""
    words: list[str] = []
    while len(" ".join(words)) < length - 8:
        word = rng.choice(ENGLISH)
        if rng.random() < 0.06:
            word = str(rng.randint(2, 2030))
        words.append(word)
        if rng.random() < 0.08 and len(words) > 2:
            words[-1] += ","
    words[0] = words[0].capitalize()
    return " ".join(words).rstrip(",") + "."


def chinese_run(rng: random.Random, chars: int, *, punctuate: bool = True) -> str:
    """`chars` characters of Chinese words; with `punctuate`, a comma or full stop every few words."""
    text = ""
    while len(text) < chars:
        text += rng.choice(CHINESE)
        if punctuate and len(text) < chars - 2 and rng.random() < 0.15:
            text += "，"
    text = text[:chars]
    return text[:-1] + "。" if punctuate else text


def person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.sample(GIVEN, rng.choice((1, 2))))


def amount(rng: random.Random, low: int = 3, high: int = 120) -> str:
    return f"{rng.randint(low, high)}.{rng.choice(('00', '50', '90', '80'))}"
